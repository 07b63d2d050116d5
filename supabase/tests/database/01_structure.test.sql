-- Structure: every grant, policy, RLS flag, schema privilege, trigger and the realtime publication
-- the migrations create, pinned exactly. Deleting any `grant` or `create policy` from
-- supabase/migrations/*.sql fails at least one assertion here (and one behavioural test elsewhere).
--
-- How every file in this directory is written (read this before adding a file)
-- ------------------------------------------------------------------------------
-- * Self-contained: `begin; ... select plan(N); ... select * from finish(); rollback;`. Fixture rows
--   are inserted by the file itself, as the postgres superuser, *before* any role switch, with fixed
--   uuids and `pgtap-` slugs / `@example.test` emails, so a seeded database changes nothing.
--   Visibility assertions filter on those fixtures (or on properties every row must have), never on
--   total counts of tables the seed fills.
-- * `set local search_path = public, extensions;` at the top: pgTAP lives in schema `extensions`
--   (anon/authenticated/service_role have USAGE on it, functions are EXECUTE to PUBLIC), so the
--   assertion functions resolve whatever role is current.
-- * PostgREST emulation. PostgREST runs, per request and inside the request's transaction,
--   `set_config('role', <role>, true)` and `set_config('request.jwt.claims', <claims json>, true)`.
--   We do exactly that with the equivalent statements
--       set local role authenticated;
--       set local request.jwt.claims to '{"sub":"<uuid>","role":"authenticated","app_metadata":{}}';
--   (`set local x to v` is `select set_config('x', v, true)` minus the result row it would print
--   into the TAP stream). anon: `set local role anon` + claims `{"role":"anon"}`; an admin:
--   `"app_metadata":{"role":"admin"}`. `reset role;` after each block returns to postgres.
-- * pgTAP works while the role is switched: plan() creates its temp tables in this session and
--   grants them to PUBLIC, so `select is(...)`, `results_eq(...)`, `throws_ok(...)` can be called
--   directly as anon/authenticated/service_role. The SQL under test is passed as a string to
--   results_eq / is_empty / throws_ok / lives_ok while the role is set, so it runs as that role.
--   Read-backs that must bypass RLS ("the row stayed unchanged") are done after `reset role`.
--   Always call plan() as postgres, before the first role switch. results_eq/is/ok/is_empty/
--   throws_ok/lives_ok need nothing more; set_eq/bag_eq create a temp table per call, which needs
--   the TEMPORARY privilege on the database (PUBLIC has it by default, here and on Supabase).
-- * SQLSTATEs: missing grant (table, column or schema) -> 42501 "permission denied for ...";
--   RLS WITH CHECK violation -> 42501 "new row violates row-level security policy for table ...";
--   check constraint -> 23514. Denials assert the exact message where it tells the two 42501s apart.
--   An UPDATE/DELETE that RLS filters out is not an error: it affects 0 rows, which we count with
--   `with u as (update ... returning 1) select count(*)::int from u`.

begin;
set local search_path = public, extensions;

select plan(133);

-- RLS is enabled on every table, exposed or private ---------------------------------------------
select ok((select relrowsecurity from pg_class where oid = 'public.marketplace_agents'::regclass),
          'RLS enabled on public.marketplace_agents');
select ok((select relrowsecurity from pg_class where oid = 'public.agent_deployments'::regclass),
          'RLS enabled on public.agent_deployments');
select ok((select relrowsecurity from pg_class where oid = 'public.agent_conversations'::regclass),
          'RLS enabled on public.agent_conversations');
select ok((select relrowsecurity from pg_class where oid = 'public.agent_messages'::regclass),
          'RLS enabled on public.agent_messages');
select ok((select relrowsecurity from pg_class where oid = 'public.message_feedback'::regclass),
          'RLS enabled on public.message_feedback');
select ok((select relrowsecurity from pg_class where oid = 'public.survey_responses'::regclass),
          'RLS enabled on public.survey_responses');
select ok((select relrowsecurity from pg_class where oid = 'private.agent_prompts'::regclass),
          'RLS enabled on private.agent_prompts');
select ok((select relrowsecurity from pg_class where oid = 'private.deployment_secrets'::regclass),
          'RLS enabled on private.deployment_secrets');
select ok((select relrowsecurity from pg_class where oid = 'private.telemetry_events'::regclass),
          'RLS enabled on private.telemetry_events');
select is_empty($$
  select c.oid::regclass::text from pg_class c
   where c.relkind in ('r', 'p') and not c.relrowsecurity
     and c.relnamespace in ('public'::regnamespace, 'private'::regnamespace)
$$, 'every table in public and private has RLS enabled (tables added later included)');
select table_privs_are('private', 'chat_jobs', 'anon', array[]::text[],
                       'anon has no privilege on private.chat_jobs');
select table_privs_are('private', 'chat_jobs', 'authenticated', array[]::text[],
                       'authenticated has no privilege on private.chat_jobs');
select table_privs_are('private', 'chat_jobs', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role (the worker) has every privilege on private.chat_jobs');

-- Schemas ------------------------------------------------------------------------------------------
-- anon/authenticated may *use* schema private (20261129130000_marketplace_api.sql: the HTTP functions
-- run as the caller's role and call private SECURITY DEFINER functions); PostgREST does not expose
-- it, and they hold no privilege on any private table, sequence or non-API function (pinned below).
select schema_privs_are('private', 'anon', array['USAGE'],
                        'anon may use schema private (to call private.track_event and track_events), not create in it');
select schema_privs_are('private', 'authenticated', array['USAGE'],
                        'authenticated may use schema private (to call the deployment functions), not create in it');
select schema_privs_are('private', 'service_role', array['USAGE'],
                        'service_role may use schema private');
select ok(not has_schema_privilege('public', 'private', 'USAGE'),
          'PUBLIC has no usage on schema private');
select schema_privs_are('public', 'anon', array['USAGE'], 'anon may use schema public');
select schema_privs_are('public', 'authenticated', array['USAGE'], 'authenticated may use schema public');
select schema_privs_are('extensions', 'authenticated', array['USAGE'],
                        'authenticated may use schema extensions (pgTAP resolves under the role)');

-- No table grants anything to PUBLIC ---------------------------------------------------------------
select is_empty($$
  select c.oid::regclass::text
    from pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
   where c.oid in ('public.marketplace_agents'::regclass, 'public.agent_deployments'::regclass,
                   'public.agent_conversations'::regclass, 'public.agent_messages'::regclass,
                   'public.message_feedback'::regclass, 'public.survey_responses'::regclass,
                   'private.agent_prompts'::regclass, 'private.deployment_secrets'::regclass,
                   'private.telemetry_events'::regclass)
     and a.grantee = 0
$$, 'no table grants privileges to PUBLIC');

-- Table privileges ---------------------------------------------------------------------------------
-- marketplace_agents: anyone reads (RLS: published rows), only the service writes.
select table_privs_are('public', 'marketplace_agents', 'anon', array['SELECT'],
                       'anon may only select marketplace_agents');
select table_privs_are('public', 'marketplace_agents', 'authenticated', array['SELECT'],
                       'authenticated may only select marketplace_agents');
select table_privs_are('public', 'marketplace_agents', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on marketplace_agents');

-- agent_deployments / agent_conversations / agent_messages: owners read, the service writes.
select table_privs_are('public', 'agent_deployments', 'anon', array[]::name[],
                       'anon has no privileges on agent_deployments');
select table_privs_are('public', 'agent_deployments', 'authenticated', array['SELECT'],
                       'authenticated may only select agent_deployments');
select table_privs_are('public', 'agent_deployments', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on agent_deployments');
select table_privs_are('public', 'agent_conversations', 'anon', array[]::name[],
                       'anon has no privileges on agent_conversations');
select table_privs_are('public', 'agent_conversations', 'authenticated', array['SELECT'],
                       'authenticated may only select agent_conversations');
select table_privs_are('public', 'agent_conversations', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on agent_conversations');
select table_privs_are('public', 'agent_messages', 'anon', array[]::name[],
                       'anon has no privileges on agent_messages');
select table_privs_are('public', 'agent_messages', 'authenticated', array['SELECT'],
                       'authenticated may only select agent_messages');
select table_privs_are('public', 'agent_messages', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on agent_messages');

-- message_feedback: select/delete on the table, insert on (message_id, user_id, rating, comment),
-- update on (rating, comment) only (20261130090200_feedback_column_grants.sql).
select table_privs_are('public', 'message_feedback', 'anon', array[]::name[],
                       'anon has no privileges on message_feedback');
select table_privs_are('public', 'message_feedback', 'authenticated', array['SELECT', 'DELETE'],
                       'authenticated may select, delete message_feedback (no table-wide insert or update)');
select table_privs_are('public', 'message_feedback', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on message_feedback');
select column_privs_are('public', 'message_feedback', 'rating', 'authenticated',
                        array['SELECT', 'INSERT', 'UPDATE'], 'authenticated may update message_feedback.rating');
select column_privs_are('public', 'message_feedback', 'comment', 'authenticated',
                        array['SELECT', 'INSERT', 'UPDATE'], 'authenticated may update message_feedback.comment');
select column_privs_are('public', 'message_feedback', 'id', 'authenticated',
                        array['SELECT'], 'authenticated may not insert or update message_feedback.id');
select column_privs_are('public', 'message_feedback', 'message_id', 'authenticated',
                        array['SELECT', 'INSERT'], 'authenticated may not update message_feedback.message_id');
select column_privs_are('public', 'message_feedback', 'user_id', 'authenticated',
                        array['SELECT', 'INSERT'], 'authenticated may not update message_feedback.user_id');
select column_privs_are('public', 'message_feedback', 'created_at', 'authenticated',
                        array['SELECT'], 'authenticated may not insert or update message_feedback.created_at');
select column_privs_are('public', 'message_feedback', 'updated_at', 'authenticated',
                        array['SELECT'], 'authenticated may not insert or update message_feedback.updated_at');
select column_privs_are('public', 'message_feedback', 'rating', 'anon', array[]::name[],
                        'anon has no column privileges on message_feedback.rating');

-- survey_responses: select, and insert of the answer's own fields only.
select table_privs_are('public', 'survey_responses', 'anon', array[]::name[],
                       'anon has no privileges on survey_responses');
select table_privs_are('public', 'survey_responses', 'authenticated', array['SELECT'],
                       'authenticated may select survey_responses (no table-wide insert)');
select results_eq($$
  select a.attname::text collate "default" from pg_attribute a
   where a.attrelid = 'public.survey_responses'::regclass and a.attnum > 0 and not a.attisdropped
     and has_column_privilege('authenticated', a.attrelid, a.attnum, 'INSERT')
   order by a.attnum
$$, array['user_id', 'deployment_id', 'satisfaction', 'ease_of_use', 'likelihood_to_recommend', 'comment'],
  'authenticated may insert exactly the answer''s fields into survey_responses (not id, created_at)');
select results_eq($$
  select a.attname::text collate "default" from pg_attribute a
   where a.attrelid = 'public.message_feedback'::regclass and a.attnum > 0 and not a.attisdropped
     and has_column_privilege('authenticated', a.attrelid, a.attnum, 'INSERT')
   order by a.attnum
$$, array['message_id', 'user_id', 'rating', 'comment'],
  'authenticated may insert exactly message_id, user_id, rating, comment into message_feedback');
select table_privs_are('public', 'survey_responses', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on survey_responses');

-- private tables: the service only.
select table_privs_are('private', 'agent_prompts', 'anon', array[]::name[],
                       'anon has no privileges on private.agent_prompts');
select table_privs_are('private', 'agent_prompts', 'authenticated', array[]::name[],
                       'authenticated has no privileges on private.agent_prompts');
select table_privs_are('private', 'agent_prompts', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on private.agent_prompts');
select table_privs_are('private', 'deployment_secrets', 'anon', array[]::name[],
                       'anon has no privileges on private.deployment_secrets');
select table_privs_are('private', 'deployment_secrets', 'authenticated', array[]::name[],
                       'authenticated has no privileges on private.deployment_secrets');
select table_privs_are('private', 'deployment_secrets', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on private.deployment_secrets');
select table_privs_are('private', 'telemetry_events', 'anon', array[]::name[],
                       'anon has no privileges on private.telemetry_events');
select table_privs_are('private', 'telemetry_events', 'authenticated', array[]::name[],
                       'authenticated has no privileges on private.telemetry_events');
select table_privs_are('private', 'telemetry_events', 'service_role',
                       array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'],
                       'service_role has all privileges on private.telemetry_events');

-- Policies -----------------------------------------------------------------------------------------
select policies_are('public', 'marketplace_agents',
                    array['published agents are visible to everyone', 'admins see unpublished agents'],
                    'marketplace_agents has exactly its two select policies');
select policy_cmd_is('public', 'marketplace_agents', 'published agents are visible to everyone', 'SELECT',
                     '"published agents are visible to everyone" is a SELECT policy');
select policy_roles_are('public', 'marketplace_agents', 'published agents are visible to everyone',
                        array['anon', 'authenticated'],
                        '"published agents are visible to everyone" applies to anon and authenticated');
select policy_cmd_is('public', 'marketplace_agents', 'admins see unpublished agents', 'SELECT',
                     '"admins see unpublished agents" is a SELECT policy');
select policy_roles_are('public', 'marketplace_agents', 'admins see unpublished agents',
                        array['authenticated'], '"admins see unpublished agents" applies to authenticated');

select policies_are('public', 'agent_deployments', array['owners read their live deployments'],
                    'agent_deployments has exactly one policy');
select policy_cmd_is('public', 'agent_deployments', 'owners read their live deployments', 'SELECT',
                     '"owners read their live deployments" is a SELECT policy');
select policy_roles_are('public', 'agent_deployments', 'owners read their live deployments',
                        array['authenticated'], '"owners read their live deployments" applies to authenticated');

select policies_are('public', 'agent_conversations', array['owners read their conversations'],
                    'agent_conversations has exactly one policy');
select policy_cmd_is('public', 'agent_conversations', 'owners read their conversations', 'SELECT',
                     '"owners read their conversations" is a SELECT policy');
select policy_roles_are('public', 'agent_conversations', 'owners read their conversations',
                        array['authenticated'], '"owners read their conversations" applies to authenticated');

select policies_are('public', 'agent_messages', array['owners read their messages'],
                    'agent_messages has exactly one policy');
select policy_cmd_is('public', 'agent_messages', 'owners read their messages', 'SELECT',
                     '"owners read their messages" is a SELECT policy');
select policy_roles_are('public', 'agent_messages', 'owners read their messages',
                        array['authenticated'], '"owners read their messages" applies to authenticated');

select policies_are('public', 'message_feedback',
                    array['owners read their feedback', 'owners rate their assistant replies',
                          'owners change their feedback', 'owners withdraw their feedback'],
                    'message_feedback has exactly its four policies');
select policy_cmd_is('public', 'message_feedback', 'owners read their feedback', 'SELECT',
                     '"owners read their feedback" is a SELECT policy');
select policy_roles_are('public', 'message_feedback', 'owners read their feedback',
                        array['authenticated'], '"owners read their feedback" applies to authenticated');
select policy_cmd_is('public', 'message_feedback', 'owners rate their assistant replies', 'INSERT',
                     '"owners rate their assistant replies" is an INSERT policy');
select policy_roles_are('public', 'message_feedback', 'owners rate their assistant replies',
                        array['authenticated'], '"owners rate their assistant replies" applies to authenticated');
select policy_cmd_is('public', 'message_feedback', 'owners change their feedback', 'UPDATE',
                     '"owners change their feedback" is an UPDATE policy');
select policy_roles_are('public', 'message_feedback', 'owners change their feedback',
                        array['authenticated'], '"owners change their feedback" applies to authenticated');
select policy_cmd_is('public', 'message_feedback', 'owners withdraw their feedback', 'DELETE',
                     '"owners withdraw their feedback" is a DELETE policy');
select policy_roles_are('public', 'message_feedback', 'owners withdraw their feedback',
                        array['authenticated'], '"owners withdraw their feedback" applies to authenticated');

select policies_are('public', 'survey_responses',
                    array['owners read their survey answers', 'owners answer the survey',
                          'owners change their survey answers'],
                    'survey_responses has exactly its three policies');
select policy_cmd_is('public', 'survey_responses', 'owners read their survey answers', 'SELECT',
                     '"owners read their survey answers" is a SELECT policy');
select policy_roles_are('public', 'survey_responses', 'owners read their survey answers',
                        array['authenticated'], '"owners read their survey answers" applies to authenticated');
select policy_cmd_is('public', 'survey_responses', 'owners answer the survey', 'INSERT',
                     '"owners answer the survey" is an INSERT policy');
select policy_roles_are('public', 'survey_responses', 'owners answer the survey',
                        array['authenticated'], '"owners answer the survey" applies to authenticated');

-- Private tables: RLS on and no policy at all, so only BYPASSRLS roles (service_role) read them.
select policies_are('private', 'agent_prompts', array[]::name[], 'private.agent_prompts has no policies');
select policies_are('private', 'deployment_secrets', array[]::name[], 'private.deployment_secrets has no policies');
select policies_are('private', 'telemetry_events', array[]::name[], 'private.telemetry_events has no policies');

-- Every policy is permissive and calls auth.uid()/auth.jwt() through a sub-select (initPlan) ------
select is_empty($$
  select tablename || '.' || policyname from pg_policies
   where schemaname = 'public' and permissive <> 'PERMISSIVE'
$$, 'every policy on the public tables is permissive');
select is_empty($$
  select tablename || '.' || policyname from pg_policies
   where schemaname = 'public'
     and (regexp_replace(coalesce(qual, '') || ' ' || coalesce(with_check, ''),
                         '\(\s*SELECT auth\.(uid|jwt)\(\) AS (uid|jwt)\)', '', 'g') ~ 'auth\.(uid|jwt)\(')
$$, 'no policy calls auth.uid()/auth.jwt() per row (always wrapped in a sub-select)');

-- Roles the policies rely on ----------------------------------------------------------------------
select ok((select rolbypassrls from pg_roles where rolname = 'service_role'), 'service_role bypasses RLS');
select ok(not (select rolbypassrls from pg_roles where rolname = 'authenticated'), 'authenticated does not bypass RLS');
select ok(not (select rolbypassrls from pg_roles where rolname = 'anon'), 'anon does not bypass RLS');

-- Triggers -----------------------------------------------------------------------------------------
select trigger_is('public', 'marketplace_agents', 'marketplace_agents_set_updated_at', 'private', 'set_updated_at',
                  'marketplace_agents keeps updated_at');
select trigger_is('private', 'agent_prompts', 'agent_prompts_set_updated_at', 'private', 'set_updated_at',
                  'agent_prompts keeps updated_at');
select trigger_is('public', 'agent_deployments', 'agent_deployments_set_updated_at', 'private', 'set_updated_at',
                  'agent_deployments keeps updated_at');
select trigger_is('private', 'deployment_secrets', 'deployment_secrets_set_updated_at', 'private', 'set_updated_at',
                  'deployment_secrets keeps updated_at');
select trigger_is('public', 'agent_conversations', 'agent_conversations_set_updated_at', 'private', 'set_updated_at',
                  'agent_conversations keeps updated_at');
select trigger_is('public', 'message_feedback', 'message_feedback_set_updated_at', 'private', 'set_updated_at',
                  'message_feedback keeps updated_at');
select trigger_is('public', 'agent_deployments', 'agent_deployments_deploy_count', 'private', 'maintain_deploy_count',
                  'agent_deployments maintains marketplace_agents.deploy_count');
select is_definer('private', 'maintain_deploy_count', array[]::name[],
                  'maintain_deploy_count is SECURITY DEFINER (deployers cannot write the catalog)');
select function_privs_are('private', 'maintain_deploy_count', array[]::name[], 'anon', array[]::name[],
                          'anon cannot execute private.maintain_deploy_count()');
select function_privs_are('private', 'maintain_deploy_count', array[]::name[], 'authenticated', array[]::name[],
                          'authenticated cannot execute private.maintain_deploy_count()');
select ok((select proconfig @> array['search_path=""'] from pg_proc
            where oid = 'private.maintain_deploy_count()'::regprocedure),
          'maintain_deploy_count pins search_path to empty');
select ok((select proconfig @> array['search_path=""'] from pg_proc
            where oid = 'private.set_updated_at()'::regprocedure),
          'set_updated_at pins search_path to empty');

-- Functions: exactly who may execute what -----------------------------------------------------------
-- (regprocedure text, so an overload added later shows up as a difference)
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
   where p.pronamespace = 'private'::regnamespace and has_function_privilege('public', p.oid, 'EXECUTE')
$$, 'no function in schema private is executable by PUBLIC');
select results_eq($$
  select p.oid::regprocedure::text collate "default" from pg_proc p
   where p.pronamespace = 'private'::regnamespace and has_function_privilege('anon', p.oid, 'EXECUTE')
   order by 1
$$, array['private.is_admin()', 'private.track_event(text,uuid,uuid,jsonb)', 'private.track_events(jsonb)'],
  'anon may execute exactly private.is_admin, track_event and track_events');
select results_eq($$
  select p.oid::regprocedure::text collate "default" from pg_proc p
   where p.pronamespace = 'private'::regnamespace and has_function_privilege('authenticated', p.oid, 'EXECUTE')
   order by 1
$$, array['private.cancel_chat_message(uuid)',
          'private.create_conversation(uuid,text)',
          'private.create_deployment(uuid,text,text,text[],bytea)',
          'private.delete_conversation(uuid,uuid)',
          'private.delete_deployment(uuid)',
          'private.deployment_secret_hints(uuid[])',
          'private.is_admin()',
          'private.marketplace_metrics(date,date,text,text,text,text)',
          'private.marketplace_stats(date,date,text,text,text,text)',
          'private.message_stream_state(uuid)',
          'private.my_usage()',
          'private.put_deployment_secret(uuid,text,text,bytea,text)',
          'private.send_chat_message(uuid,uuid,text,text,text,uuid,text)',
          'private.track_event(text,uuid,uuid,jsonb)',
          'private.track_events(jsonb)',
          'private.update_deployment(uuid,text,text,text[],bytea,text)'],
  'authenticated may execute exactly the API functions in schema private');
select results_eq($$
  select p.oid::regprocedure::text collate "default" from pg_proc p
   where p.pronamespace = 'private'::regnamespace and has_function_privilege('agentmarket_api', p.oid, 'EXECUTE')
   order by 1
$$, array['private.api_signing_key()', 'private.applied_migrations()'],
  'the API login itself may execute exactly api_signing_key() and applied_migrations()');
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
   where p.pronamespace = 'private'::regnamespace and not has_function_privilege('service_role', p.oid, 'EXECUTE')
$$, 'service_role may execute every function in schema private');
select results_eq($$
  select p.oid::regprocedure::text collate "default" from pg_proc p
   where p.pronamespace = 'private'::regnamespace and p.prosecdef
   order by 1
$$, array['private.analytics_conversations_changed()',
          'private.analytics_deployment_rate_limited_deleted()',
          'private.analytics_deployments_changed()',
          'private.analytics_feedback_changed()',
          'private.analytics_jobs_changed()',
          'private.analytics_messages_changed()',
          'private.analytics_rate_limited_changed()',
          'private.analytics_rebuild()',
          'private.analytics_reply_cells_changed()',
          'private.api_signing_key()',
          'private.applied_migrations()',
          'private.cancel_chat_message(uuid)',
          'private.create_conversation(uuid,text)',
          'private.create_deployment(uuid,text,text,text[],bytea)',
          'private.delete_conversation(uuid,uuid)',
          'private.delete_deployment(uuid)',
          'private.deployment_secret_hints(uuid[])',
          'private.maintain_deploy_count()',
          'private.marketplace_metrics(date,date,text,text,text,text)',
          'private.marketplace_stats(date,date,text,text,text,text)',
          'private.message_stream_state(uuid)',
          'private.my_usage()',
          'private.put_deployment_secret(uuid,text,text,bytea,text)',
          'private.send_chat_message(uuid,uuid,text,text,text,uuid,text)',
          'private.track_event(text,uuid,uuid,jsonb)',
          'private.track_events(jsonb)',
          'private.update_deployment(uuid,text,text,text[],bytea,text)'],
  'exactly these private functions are SECURITY DEFINER');
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
   where (p.pronamespace = 'private'::regnamespace
          or p.oid in ('public.search_agents(text,text,text,text,text,integer,integer)'::regprocedure,
                       'public.agent_search_query(text)'::regprocedure))
     and not coalesce(p.proconfig @> array['search_path=""'], false)
$$, 'every private function and the public API functions pin search_path to empty');

select function_privs_are('public', 'search_agents', array['text', 'text', 'text', 'text', 'text', 'integer', 'integer'],
                          'anon', array['EXECUTE'], 'anon may execute public.search_agents');
select function_privs_are('public', 'search_agents', array['text', 'text', 'text', 'text', 'text', 'integer', 'integer'],
                          'authenticated', array['EXECUTE'], 'authenticated may execute public.search_agents');
select function_privs_are('public', 'search_agents', array['text', 'text', 'text', 'text', 'text', 'integer', 'integer'],
                          'service_role', array['EXECUTE'], 'service_role may execute public.search_agents');
select ok(not has_function_privilege('public', 'public.search_agents(text,text,text,text,text,integer,integer)', 'EXECUTE'),
          'PUBLIC may not execute public.search_agents (only the API roles)');
select isnt_definer('public', 'search_agents', array['text', 'text', 'text', 'text', 'text', 'integer', 'integer'],
                    'search_agents is SECURITY INVOKER, so RLS decides what the caller sees');
select function_privs_are('public', 'agent_search_query', array['text'], 'anon', array['EXECUTE'],
                          'anon may execute public.agent_search_query');
select function_privs_are('public', 'agent_search_query', array['text'], 'authenticated', array['EXECUTE'],
                          'authenticated may execute public.agent_search_query');
select function_privs_are('public', 'agent_search_query', array['text'], 'service_role', array['EXECUTE'],
                          'service_role may execute public.agent_search_query');
select ok(not has_function_privilege('public', 'public.agent_search_query(text)', 'EXECUTE'),
          'PUBLIC may not execute public.agent_search_query (only the API roles)');

-- Every function in `private` is closed to PUBLIC, and anon/authenticated may execute only the
-- allow-listed API functions: a later migration that forgets its revoke fails here.
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
   where p.pronamespace = 'private'::regnamespace
     and has_function_privilege('public', p.oid, 'EXECUTE')
$$, 'no function in private is executable by PUBLIC');

-- Realtime -----------------------------------------------------------------------------------------
select ok(exists (select 1 from pg_publication where pubname = 'supabase_realtime'),
          'publication supabase_realtime exists');
select results_eq($$
  select tablename::text collate "default" from pg_publication_tables
   where pubname = 'supabase_realtime' and schemaname = 'public'
     and tablename in ('marketplace_agents', 'agent_deployments', 'agent_conversations',
                       'agent_messages', 'message_feedback', 'survey_responses')
   order by 1
$$, array['agent_messages'], 'agent_messages (and no other table of ours) is in supabase_realtime');

-- Indexes on the columns policies filter by -------------------------------------------------------
select has_index('public', 'agent_deployments', 'agent_deployments_user_id_idx', 'user_id',
                 'agent_deployments is indexed on user_id');
select has_index('public', 'agent_conversations', 'agent_conversations_user_idx', 'user_id',
                 'agent_conversations is indexed on user_id');
select has_index('public', 'agent_messages', 'agent_messages_user_created_idx', array['user_id', 'created_at'],
                 'agent_messages is indexed on user_id (leading column)');
select hasnt_index('public', 'agent_messages', 'agent_messages_user_idx',
                   'no second index on agent_messages.user_id alone');
select has_index('public', 'message_feedback', 'message_feedback_user_idx', 'user_id',
                 'message_feedback is indexed on user_id');
select has_index('public', 'survey_responses', 'survey_responses_one_per_user_deployment', array['user_id', 'deployment_id'],
                 'survey_responses is indexed on user_id (leading column)');
select hasnt_index('public', 'survey_responses', 'survey_responses_user_idx',
                   'no second index on survey_responses.user_id alone');
select has_index('public', 'marketplace_agents', 'marketplace_agents_is_published_idx', 'is_published',
                 'marketplace_agents is indexed on is_published');

select * from finish();
rollback;
