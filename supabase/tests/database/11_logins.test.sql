-- The processes' logins (20261130090000_least_privilege_logins.sql):
--   agentmarket_api     may become anon or authenticated only; its own privileges are nil apart from
--                       EXECUTE on private.applied_migrations() and private.api_signing_key();
--   agentmarket_worker  acts as service_role (switched to it at login); holds nothing itself.
-- Neither is a superuser or has CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS.
-- SET ROLE is checked against the *session* user, so the behavioural probes run under
-- `set local session authorization <login>` (postgres may), in DO blocks that record what each
-- attempt did into a temp table; the assertions read it back as postgres. (The login itself has no
-- USAGE on schema extensions, where pgTAP lives.) SET SESSION AUTHORIZATION is judged by the user
-- who logged in (postgres here), so that and the worker's login-time switch to service_role are
-- proven over real logins in tests/integration/test_logins.py.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(32);

-- Attributes -----------------------------------------------------------------------------------------
select results_eq($$
  select rolname::text collate "default", rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolinherit
    from pg_roles where rolname in ('agentmarket_api', 'agentmarket_worker') order by rolname
$$, $$values ('agentmarket_api'::text, false, false, false, false, false, false),
             ('agentmarket_worker', false, false, false, false, false, false)$$,
  'neither login is superuser, createrole, createdb, replication or bypassrls, and neither inherits');
select results_eq($$
  select r.rolname::text collate "default" from pg_auth_members m join pg_roles r on r.oid = m.roleid
   where m.member = 'agentmarket_api'::regrole order by 1
$$, array['anon', 'authenticated'], 'agentmarket_api is a member of exactly anon and authenticated');
select results_eq($$
  select r.rolname::text collate "default" from pg_auth_members m join pg_roles r on r.oid = m.roleid
   where m.member = 'agentmarket_worker'::regrole order by 1
$$, array['service_role'], 'agentmarket_worker is a member of exactly service_role');
select ok(exists (select 1 from pg_db_role_setting
                   where setrole = 'agentmarket_worker'::regrole and setdatabase = 0
                     and setconfig @> array['role=service_role']),
          'agentmarket_worker switches to service_role at login');
select ok(not pg_has_role('agentmarket_api', 'service_role', 'member'), 'agentmarket_api cannot become service_role');
select ok(not pg_has_role('agentmarket_api', 'postgres', 'member'), 'agentmarket_api cannot become postgres');
select ok(not pg_has_role('agentmarket_api', 'agentmarket_worker', 'member'), 'agentmarket_api cannot become the worker');
select ok(not pg_has_role('agentmarket_worker', 'postgres', 'member'), 'agentmarket_worker cannot become postgres');
select ok(not pg_has_role('agentmarket_worker', 'agentmarket_api', 'member'), 'agentmarket_worker cannot become the API login');
select ok(not pg_has_role('anon', 'agentmarket_api', 'member') and not pg_has_role('authenticated', 'agentmarket_api', 'member')
          and not pg_has_role('service_role', 'agentmarket_api', 'member'),
          'no API role is a member of agentmarket_api');

-- The API login's own privileges (what RESET ROLE gets back to) ----------------------------------------
select is_empty($$
  select c.oid::regclass::text from pg_class c
   where c.relnamespace in ('public'::regnamespace, 'private'::regnamespace, 'auth'::regnamespace,
                            'supabase_migrations'::regnamespace)
     and c.relkind in ('r', 'p', 'v', 'm', 'S')
     and has_table_privilege('agentmarket_api', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
$$, 'agentmarket_api holds no privilege on any table, view or sequence in public, private, auth or supabase_migrations');
select is_empty($$
  select c.oid::regclass::text from pg_class c
   where c.relnamespace in ('public'::regnamespace, 'private'::regnamespace, 'auth'::regnamespace)
     and c.relkind in ('r', 'p', 'v', 'm', 'S')
     and has_table_privilege('agentmarket_worker', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
$$, 'agentmarket_worker itself holds no table privilege (it works as service_role)');
select schema_privs_are('private', 'agentmarket_api', array['USAGE'],
                        'agentmarket_api may use schema private (for its two functions), not create in it');
select schema_privs_are('auth', 'agentmarket_api', array[]::text[], 'agentmarket_api cannot use schema auth');
select schema_privs_are('supabase_migrations', 'agentmarket_api', array[]::text[],
                        'agentmarket_api cannot use schema supabase_migrations');
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
   where p.pronamespace in ('public'::regnamespace, 'auth'::regnamespace)
     and has_function_privilege('agentmarket_api', p.oid, 'EXECUTE')
     and not has_function_privilege('public', p.oid, 'EXECUTE')
$$, 'agentmarket_api may execute no restricted function in public or auth');
select ok(not has_function_privilege('agentmarket_worker', 'private.api_signing_key()', 'EXECUTE'),
          'the worker login itself cannot read the signing key');

-- Behaviour: the API login ----------------------------------------------------------------------------
create temp table probe (login text, attempt text, outcome text);
grant all on probe to public;

set local session authorization agentmarket_api;
do $$
declare
  r record;
begin
  insert into pg_temp.probe values ('api', 'whoami', session_user || '/' || current_user);
  for r in select * from (values
      ('set role service_role'), ('set role postgres'), ('set role agentmarket_worker'), ('set role authenticator'),
      ('set role anon'), ('set role authenticated'),
      ('select 1 from private.deployment_secrets'), ('select 1 from private.telemetry_events'),
      ('select 1 from private.api_signing_key'), ('select 1 from auth.users'),
      ('select 1 from supabase_migrations.schema_migrations'), ('select 1 from public.agent_deployments'),
      ('insert into public.marketplace_agents (slug, name, category, kind, pricing_model) values (''pgtap-x'', ''x'', ''x'', ''chat'', ''free'')'),
      ('insert into private.telemetry_events (name) values (''pgtap.api.event'')'),
      ('select private.track_event(''pgtap.api.event'', null, null, null)'),
      ('select private.applied_migrations()'), ('select private.api_signing_key()')
    ) as t(attempt)
  loop
    begin
      execute r.attempt;
      insert into pg_temp.probe values ('api', r.attempt, 'ok as ' || current_user);
      reset role;
    exception when others then
      insert into pg_temp.probe values ('api', r.attempt, sqlstate);
    end;
  end loop;
end
$$;
reset session authorization;

select is((select outcome from probe where login = 'api' and attempt = 'whoami'), 'agentmarket_api/agentmarket_api',
          'a session as the API login starts as itself');
select is((select outcome from probe where login = 'api' and attempt = 'set role service_role'), '42501',
          'the API login cannot SET ROLE service_role');
select is((select outcome from probe where login = 'api' and attempt = 'set role postgres'), '42501',
          'the API login cannot SET ROLE postgres');
select is((select outcome from probe where login = 'api' and attempt = 'set role agentmarket_worker'), '42501',
          'the API login cannot SET ROLE to the worker login');
select is((select outcome from probe where login = 'api' and attempt = 'set role authenticator'), '42501',
          'the API login cannot SET ROLE authenticator');
select is((select outcome from probe where login = 'api' and attempt = 'set role anon'), 'ok as anon',
          'the API login may become anon');
select is((select outcome from probe where login = 'api' and attempt = 'set role authenticated'), 'ok as authenticated',
          'the API login may become authenticated');
select results_eq($$select attempt, outcome from probe where login = 'api' and attempt like 'select 1 from %' order by attempt$$,
                  $$values ('select 1 from auth.users'::text, '42501'::text),
                           ('select 1 from private.api_signing_key', '42501'),
                           ('select 1 from private.deployment_secrets', '42501'),
                           ('select 1 from private.telemetry_events', '42501'),
                           ('select 1 from public.agent_deployments', '42501'),
                           ('select 1 from supabase_migrations.schema_migrations', '42501')$$,
                  'as itself (e.g. after RESET ROLE) the API login reads nothing: private, auth, history, public rows');
select results_eq($$select outcome from probe where login = 'api' and attempt like 'insert into %' order by attempt$$,
                  array['42501', '42501'], 'as itself the API login writes nothing (catalog, telemetry)');
select is((select outcome from probe where login = 'api' and attempt like 'select private.track_event%'), '42501',
          'as itself the API login cannot even record telemetry (it does so as anon/authenticated)');
select is((select outcome from probe where login = 'api' and attempt = 'select private.applied_migrations()'),
          'ok as agentmarket_api', 'the API login reads the applied migration versions (/readyz)');
select is((select outcome from probe where login = 'api' and attempt = 'select private.api_signing_key()'),
          'ok as agentmarket_api', 'the API login reads the signing key');

-- Behaviour: the worker login -------------------------------------------------------------------------
set local session authorization agentmarket_worker;
do $$
declare
  r record;
begin
  for r in select * from (values
      ('set role postgres'), ('set role agentmarket_api'), ('set role authenticator'), ('set role service_role')
    ) as t(attempt)
  loop
    begin
      execute r.attempt;
      insert into pg_temp.probe values ('worker', r.attempt, 'ok as ' || current_user);
    exception when others then
      insert into pg_temp.probe values ('worker', r.attempt, sqlstate);
    end;
  end loop;
  -- As service_role (the last attempt switched): the worker's job.
  begin
    perform * from private.claim_chat_jobs('pgtap-worker', 1, 30);
    perform 1 from private.agent_prompts limit 1;
    perform 1 from private.deployment_secrets limit 1;
    insert into pg_temp.probe values ('worker', 'claim, prompts, secrets', 'ok as ' || current_user);
  exception when others then
    insert into pg_temp.probe values ('worker', 'claim, prompts, secrets', sqlstate);
  end;
  begin
    create role pgtap_should_not_exist;
    insert into pg_temp.probe values ('worker', 'create role', 'ok');
  exception when others then
    insert into pg_temp.probe values ('worker', 'create role', sqlstate);
  end;
end
$$;
reset session authorization;

select results_eq($$select attempt, outcome from probe where login = 'worker' and attempt like 'set %' order by attempt$$,
                  $$values ('set role agentmarket_api'::text, '42501'::text),
                           ('set role authenticator', '42501'),
                           ('set role postgres', '42501'),
                           ('set role service_role', 'ok as service_role')$$,
                  'the worker login may become service_role and nothing else');
select is((select outcome from probe where login = 'worker' and attempt = 'claim, prompts, secrets'), 'ok as service_role',
          'as service_role the worker claims jobs and reads prompts and secrets');
select is((select outcome from probe where login = 'worker' and attempt = 'create role'), '42501',
          'the worker cannot create roles');

select * from finish();
rollback;
