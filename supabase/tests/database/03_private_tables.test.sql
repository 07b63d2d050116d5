-- private.agent_prompts, private.deployment_secrets, private.telemetry_events: service only.
-- anon and authenticated (admins included) have USAGE on schema private (20261129130000 grants it so
-- they can call the private SECURITY DEFINER functions) but no privilege on any private table, so
-- every direct read or write is 42501 "permission denied for table ..."; service_role reads and writes.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(41);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('c0000000-0000-4000-8000-00000000000c', 'pgtap-admin@example.test', '{"role": "admin"}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-published', 'pgTAP published', 'testing', 'chat', 'free', true);
insert into private.agent_prompts (agent_id, system_prompt) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap secret system prompt');
insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'pgtap A deployment');
insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint) values
  ('d0000000-0000-4000-8000-0000000000a1', 'api_key', 'k1', '\x00'::bytea, 'sk-…abcd');
insert into private.telemetry_events (name, user_id, properties) values
  ('pgtap.fixture.event', 'a0000000-0000-4000-8000-00000000000a', '{"k": "v"}');

-- anon -----------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';

select throws_ok($$select * from private.agent_prompts$$, '42501', 'permission denied for table agent_prompts',
                 'anon cannot select private.agent_prompts');
select throws_ok($$insert into private.agent_prompts (agent_id, system_prompt)
                   values ('a9000000-0000-4000-8000-000000000001', 'x')$$,
                 '42501', 'permission denied for table agent_prompts', 'anon cannot insert private.agent_prompts');
select throws_ok($$update private.agent_prompts set system_prompt = 'x'$$, '42501',
                 'permission denied for table agent_prompts', 'anon cannot update private.agent_prompts');
select throws_ok($$delete from private.agent_prompts$$, '42501',
                 'permission denied for table agent_prompts', 'anon cannot delete private.agent_prompts');

select throws_ok($$select * from private.deployment_secrets$$, '42501', 'permission denied for table deployment_secrets',
                 'anon cannot select private.deployment_secrets');
select throws_ok($$insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint)
                   values ('d0000000-0000-4000-8000-0000000000a1', 'other', 'k1', '\x00', 'h')$$,
                 '42501', 'permission denied for table deployment_secrets', 'anon cannot insert private.deployment_secrets');
select throws_ok($$update private.deployment_secrets set hint = 'x'$$, '42501',
                 'permission denied for table deployment_secrets', 'anon cannot update private.deployment_secrets');
select throws_ok($$delete from private.deployment_secrets$$, '42501',
                 'permission denied for table deployment_secrets', 'anon cannot delete private.deployment_secrets');

select throws_ok($$select * from private.telemetry_events$$, '42501', 'permission denied for table telemetry_events',
                 'anon cannot select private.telemetry_events');
select throws_ok($$insert into private.telemetry_events (name) values ('pgtap.anon.event')$$,
                 '42501', 'permission denied for table telemetry_events', 'anon cannot insert private.telemetry_events');
select throws_ok($$update private.telemetry_events set properties = '{}'$$, '42501',
                 'permission denied for table telemetry_events', 'anon cannot update private.telemetry_events');
select throws_ok($$delete from private.telemetry_events$$, '42501',
                 'permission denied for table telemetry_events', 'anon cannot delete private.telemetry_events');
reset role;

-- authenticated user A -------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select throws_ok($$select * from private.agent_prompts$$, '42501', 'permission denied for table agent_prompts',
                 'authenticated cannot select private.agent_prompts');
select throws_ok($$insert into private.agent_prompts (agent_id, system_prompt)
                   values ('a9000000-0000-4000-8000-000000000001', 'x')$$,
                 '42501', 'permission denied for table agent_prompts', 'authenticated cannot insert private.agent_prompts');
select throws_ok($$update private.agent_prompts set system_prompt = 'x'$$, '42501',
                 'permission denied for table agent_prompts', 'authenticated cannot update private.agent_prompts');
select throws_ok($$delete from private.agent_prompts$$, '42501',
                 'permission denied for table agent_prompts', 'authenticated cannot delete private.agent_prompts');

select throws_ok($$select * from private.deployment_secrets$$, '42501', 'permission denied for table deployment_secrets',
                 'authenticated cannot select private.deployment_secrets (not even for an own deployment)');
select throws_ok($$insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint)
                   values ('d0000000-0000-4000-8000-0000000000a1', 'other', 'k1', '\x00', 'h')$$,
                 '42501', 'permission denied for table deployment_secrets', 'authenticated cannot insert private.deployment_secrets');
select throws_ok($$update private.deployment_secrets set hint = 'x'$$, '42501',
                 'permission denied for table deployment_secrets', 'authenticated cannot update private.deployment_secrets');
select throws_ok($$delete from private.deployment_secrets$$, '42501',
                 'permission denied for table deployment_secrets', 'authenticated cannot delete private.deployment_secrets');

select throws_ok($$select * from private.telemetry_events$$, '42501', 'permission denied for table telemetry_events',
                 'authenticated cannot select private.telemetry_events');
select throws_ok($$insert into private.telemetry_events (name) values ('pgtap.user.event')$$,
                 '42501', 'permission denied for table telemetry_events', 'authenticated cannot insert private.telemetry_events');
select throws_ok($$update private.telemetry_events set properties = '{}'$$, '42501',
                 'permission denied for table telemetry_events', 'authenticated cannot update private.telemetry_events');
select throws_ok($$delete from private.telemetry_events$$, '42501',
                 'permission denied for table telemetry_events', 'authenticated cannot delete private.telemetry_events');
reset role;

-- an admin is still the authenticated role: no direct access either ----------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select throws_ok($$select * from private.agent_prompts$$, '42501', 'permission denied for table agent_prompts',
                 'an admin cannot select private.agent_prompts');
select throws_ok($$select * from private.deployment_secrets$$, '42501', 'permission denied for table deployment_secrets',
                 'an admin cannot select private.deployment_secrets');
select throws_ok($$select * from private.telemetry_events$$, '42501', 'permission denied for table telemetry_events',
                 'an admin cannot select private.telemetry_events (analytics go through functions)');
reset role;

-- service_role ---------------------------------------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';

select results_eq($$select system_prompt from private.agent_prompts
                     where agent_id = 'a9000000-0000-4000-8000-000000000001'$$,
                  array['pgtap secret system prompt'], 'service_role selects private.agent_prompts');
select results_eq($$select hint from private.deployment_secrets
                     where deployment_id = 'd0000000-0000-4000-8000-0000000000a1'$$,
                  array['sk-…abcd'], 'service_role selects private.deployment_secrets');
select results_eq($$select properties ->> 'k' from private.telemetry_events where name = 'pgtap.fixture.event'$$,
                  array['v'], 'service_role selects private.telemetry_events');

select lives_ok($$update private.agent_prompts set system_prompt = 'pgtap updated prompt'
                   where agent_id = 'a9000000-0000-4000-8000-000000000001'$$,
                'service_role updates private.agent_prompts');
select lives_ok($$insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint)
                  values ('d0000000-0000-4000-8000-0000000000a1', 'webhook_token', 'k2', '\x0102', 'wh-…1234')$$,
                'service_role inserts private.deployment_secrets');
select lives_ok($$insert into private.telemetry_events (name, user_id) values
                  ('pgtap.service.event', 'a0000000-0000-4000-8000-00000000000a')$$,
                'service_role inserts private.telemetry_events (identity column included)');
select lives_ok($$delete from private.deployment_secrets
                   where deployment_id = 'd0000000-0000-4000-8000-0000000000a1' and field = 'api_key'$$,
                'service_role deletes private.deployment_secrets');
select lives_ok($$delete from private.telemetry_events where name = 'pgtap.fixture.event'$$,
                'service_role deletes private.telemetry_events');
select lives_ok($$delete from private.agent_prompts where agent_id = 'a9000000-0000-4000-8000-000000000001'$$,
                'service_role deletes private.agent_prompts');
select lives_ok($$insert into private.agent_prompts (agent_id, system_prompt)
                  values ('a9000000-0000-4000-8000-000000000001', 'pgtap prompt again')$$,
                'service_role inserts private.agent_prompts');
reset role;

-- read back as postgres ------------------------------------------------------------------------------
select results_eq($$select system_prompt from private.agent_prompts
                     where agent_id = 'a9000000-0000-4000-8000-000000000001'$$,
                  array['pgtap prompt again'], 'agent_prompts holds what service_role wrote');
select results_eq($$select field from private.deployment_secrets
                     where deployment_id = 'd0000000-0000-4000-8000-0000000000a1' order by field$$,
                  array['webhook_token'], 'deployment_secrets holds what service_role wrote');
select results_eq($$select name from private.telemetry_events where name like 'pgtap.%' order by name$$,
                  array['pgtap.service.event'], 'telemetry_events holds what service_role wrote (none from clients)');
select is((select count(*)::int from private.agent_prompts where system_prompt = 'x'), 0,
          'no prompt was written by anon or authenticated');

select * from finish();
rollback;
