-- private.create_deployment / update_deployment do not trust their caller
-- (20261130090100_trusted_deployment_writes.sql): called directly as `authenticated` with forged
-- arguments (no, bad or another user's / agent's / config's signature, a forged missing list, a
-- forged status) they refuse (AMSIG, AMCFG, 22023); the cap is not an argument but
-- private.app_settings, which neither anon nor authenticated can read or write; the signing key is
-- reachable by neither. The legitimate path (the functions app's own signature) is
-- 09_api_functions.test.sql and tests/api/test_deployments.py.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(33);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-one', 'pgTAP one', 'testing', 'chat', 'free', true),
  ('a9000000-0000-4000-8000-000000000002', 'pgtap-two', 'pgTAP two', 'testing', 'chat', 'free', true);
update private.app_settings set max_active_deployments = 5;

create function pg_temp.sign(p_op text, p_user uuid, p_target uuid, p_config text, p_missing text[])
returns bytea language sql as $$
  select extensions.hmac(convert_to(private.signed_deployment_payload(p_op, p_user, p_target, p_config, p_missing), 'UTF8'),
                         private.api_signing_key(), 'sha256')
$$;
create temp table sigs (name text primary key, sig bytea not null);
grant select on sigs to public;
insert into sigs values
  ('a-one', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001',
                         '{"tone":"dry"}', '{}')),
  ('b-one', pg_temp.sign('create', 'b0000000-0000-4000-8000-00000000000b', 'a9000000-0000-4000-8000-000000000001',
                         '{"tone":"dry"}', '{}')),
  ('a-one-missing', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001',
                                 '{}', '{openai_api_key,"a, b"}')),
  ('wrong-key', extensions.hmac(convert_to(private.signed_deployment_payload(
                   'create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001',
                   '{"tone":"dry"}', '{}'), 'UTF8'), '\x00000000000000000000000000000000'::bytea, 'sha256'));

-- A forges the create ----------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone":"dry"}', '{}',
                     '\x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff')$$,
                 'AMSIG', 'configuration signature does not match', 'made-up signature bytes are refused');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone":"dry"}', '{}', null)$$,
                 'AMSIG', 'configuration signature does not match', 'no signature is refused');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone":"dry"}', '{}',
                     (select sig from pg_temp.sigs where name = 'wrong-key'))$$,
                 'AMSIG', 'configuration signature does not match', 'a signature under another key is refused');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone":"dry"}', '{}',
                     (select sig from pg_temp.sigs where name = 'b-one'))$$,
                 'AMSIG', 'configuration signature does not match', 'B''s signature (same agent and config) does not work for A');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000002', 'x', '{"tone":"dry"}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-one'))$$,
                 'AMSIG', 'configuration signature does not match', 'A''s signature for agent one does not work for agent two');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone":"wet"}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-one'))$$,
                 'AMSIG', 'configuration signature does not match', 'a config other than the one signed is refused');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone": "dry"}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-one'))$$,
                 'AMSIG', 'configuration signature does not match', 'the signature covers the exact config text sent');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-one-missing'))$$,
                 'AMSIG', 'configuration signature does not match',
                 'claiming no required field is missing (to get an active deployment) is refused');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{}', '{openai_api_key}',
                     (select sig from pg_temp.sigs where name = 'a-one-missing'))$$,
                 'AMSIG', 'configuration signature does not match', 'the missing list is signed as a whole');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{"tone":"dry"}', 'active', null, 100000)$$,
                 '42883', null, 'there is no create_deployment taking a status and a cap any more');
select throws_ok($$select * from private.update_deployment('a9000000-0000-4000-8000-000000000001', 'x', '{}', 'active', null, 100000)$$,
                 '42883', null, 'there is no update_deployment taking a status and a cap any more');

-- A's legitimate creates: the status is derived, not chosen ---------------------------------------------
select results_eq($$select name, status, status_reason, config from private.create_deployment(
                      'a9000000-0000-4000-8000-000000000001', 'A ready', '{"tone":"dry"}', '{}',
                      (select sig from pg_temp.sigs where name = 'a-one'))$$,
                  $$values ('A ready'::text, 'active'::text, null::text, '{"tone": "dry"}'::jsonb)$$,
                  'a signed complete config makes an active deployment');
select results_eq($$select name, status, status_reason from private.create_deployment(
                      'a9000000-0000-4000-8000-000000000001', 'A incomplete', '{}', '{openai_api_key,"a, b"}',
                      (select sig from pg_temp.sigs where name = 'a-one-missing'))$$,
                  $$values ('A incomplete'::text, 'configuring'::text, 'missing required configuration: openai_api_key, a, b'::text)$$,
                  'a signed config with missing fields makes a configuring deployment, the reason names them');

-- A cannot reach the cap, the key or the signing helpers -------------------------------------------------
select throws_ok($$select * from private.app_settings$$, '42501', 'permission denied for table app_settings',
                 'A cannot read private.app_settings');
select throws_ok($$update private.app_settings set max_active_deployments = 1000$$, '42501',
                 'permission denied for table app_settings', 'A cannot raise the cap');
select throws_ok($$select * from private.api_signing_key$$, '42501', 'permission denied for table api_signing_key',
                 'A cannot read the signing key table');
select throws_ok($$select private.api_signing_key()$$, '42501', 'permission denied for function api_signing_key',
                 'A cannot call private.api_signing_key()');
select throws_ok($$select private.deployment_signature_valid('create', null, null, null, null, null)$$, '42501',
                 'permission denied for function deployment_signature_valid', 'A cannot call the verifier');
select throws_ok($$select private.signed_deployment_payload('create', null, null, null, null)$$, '42501',
                 'permission denied for function signed_deployment_payload', 'A cannot call the payload helper');
reset role;

-- Updates: signatures are bound to the deployment and the operation ---------------------------------------
insert into pg_temp.sigs values
  ('a-ready-update', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a',
                                  (select id from public.agent_deployments where name = 'A ready'), '{"tone":"calm"}', '{}')),
  ('a-ready-create-op', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a',
                                     (select id from public.agent_deployments where name = 'A ready'), '{"tone":"calm"}', '{}')),
  ('a-incomplete-fixed', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a',
                                      (select id from public.agent_deployments where name = 'A incomplete'), '{"k":1}', '{}')),
  ('a-incomplete-still', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a',
                                      (select id from public.agent_deployments where name = 'A incomplete'), '{}', '{openai_api_key}'));
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select throws_ok($$select * from private.update_deployment((select id from public.agent_deployments where name = 'A incomplete'),
                     null, '{"tone":"calm"}', '{}', (select sig from pg_temp.sigs where name = 'a-ready-update'), null)$$,
                 'AMSIG', 'configuration signature does not match', 'a signature for another deployment is refused');
select throws_ok($$select * from private.update_deployment((select id from public.agent_deployments where name = 'A ready'),
                     null, '{"tone":"calm"}', '{}', (select sig from pg_temp.sigs where name = 'a-ready-create-op'), null)$$,
                 'AMSIG', 'configuration signature does not match', 'a create signature does not work for an update');
select throws_ok($$select * from private.update_deployment((select id from public.agent_deployments where name = 'A incomplete'),
                     null, null, null, null, 'active')$$,
                 'AMSIG', 'activating needs a validated configuration', 'A cannot activate a configuring deployment without a signed config');
select throws_ok($$select * from private.update_deployment((select id from public.agent_deployments where name = 'A incomplete'),
                     null, '{}', '{openai_api_key}', (select sig from pg_temp.sigs where name = 'a-incomplete-still'), 'active')$$,
                 'AMCFG', 'deployment not configured: missing required configuration: openai_api_key',
                 'A cannot activate while the signed config still misses fields');
select throws_ok($$select * from private.update_deployment((select id from public.agent_deployments where name = 'A ready'),
                     null, null, null, null, 'error')$$,
                 '22023', 'status must be active or paused', 'A cannot set any other status');
select results_eq($$select status, status_reason, config from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A incomplete'), null, '{"k":1}', '{}',
                      (select sig from pg_temp.sigs where name = 'a-incomplete-fixed'), 'active')$$,
                  $$values ('active'::text, null::text, '{"k": 1}'::jsonb)$$,
                  'a signed complete config activates the deployment');
select results_eq($$select status from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A ready'), null, null, null, null, 'paused')$$,
                  array['paused'], 'A pauses on request');
select results_eq($$select status, config from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A ready'), null, '{"tone":"calm"}', '{}',
                      (select sig from pg_temp.sigs where name = 'a-ready-update'), null)$$,
                  $$values ('paused'::text, '{"tone": "calm"}'::jsonb)$$,
                  'reconfiguring a paused deployment keeps it paused');
reset role;

-- The cap comes from private.app_settings ---------------------------------------------------------------
update private.app_settings set max_active_deployments = 1;
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A over', '{"tone":"dry"}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-one'))$$,
                 'AMLIM', 'deployment limit reached', 'the stored cap (1) applies: A already has an active deployment');
reset role;

-- anon reaches none of it; service_role (operator tools) manages the settings -----------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select private.api_signing_key()$$, '42501', 'permission denied for function api_signing_key',
                 'anon cannot call private.api_signing_key()');
select throws_ok($$select * from private.app_settings$$, '42501', 'permission denied for table app_settings',
                 'anon cannot read private.app_settings');
reset role;
set local role service_role;
select results_eq($$select max_active_deployments from private.app_settings$$, array[1],
                  'service_role reads private.app_settings');
reset role;

select results_eq($$select name, status from public.agent_deployments
                     where user_id = 'a0000000-0000-4000-8000-00000000000a' order by name$$,
                  $$values ('A incomplete'::text, 'active'::text), ('A ready', 'paused')$$,
                  'only the legitimate calls left deployments behind');
select is_empty($$select 1 from public.agent_deployments where name in ('x', 'A over')$$,
                'no forged call created a deployment');

select * from finish();
rollback;
