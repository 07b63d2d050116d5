-- The API functions of 20261129130000_marketplace_api.sql, called exactly as the HTTP functions call
-- them: as the caller's role (anon / authenticated) with the caller's claims.
--   * public.search_agents / public.agent_search_query: SECURITY INVOKER catalog search (published only);
--   * private.create_deployment / update_deployment / delete_deployment / put_deployment_secret /
--     deployment_secret_hints: SECURITY DEFINER, authenticated only, act on the caller's own rows only;
--     create/update accept a config only with the API's signature (computed here as postgres with
--     the database's key, as the functions compute it) and read the cap from private.app_settings
--     (forged arguments: 10_trusted_deployment_writes.test.sql);
--   * private.track_event: anon and authenticated, the user id comes from the claims.
-- Custom SQLSTATEs: AMNF1 agent not found, AMNF2 deployment not found, AMLIM deployment limit reached.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(47);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}'),
  ('c0000000-0000-4000-8000-00000000000c', 'pgtap-admin@example.test', '{"role": "admin"}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published, tags) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-published', 'Pgtapqux published', 'pgtap-testing', 'chat', 'free', true,
   array['pgtapzz']),
  ('a9000000-0000-4000-8000-000000000002', 'pgtap-unpublished', 'Pgtapqux unpublished', 'pgtap-testing', 'chat', 'free', false,
   array['pgtapzz']);
insert into public.agent_deployments (id, user_id, agent_id, name, deleted_at) values
  ('d0000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000001', 'B live', null),
  ('d0000000-0000-4000-8000-0000000000a9', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A deleted', now());
insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint) values
  ('d0000000-0000-4000-8000-0000000000b1', 'api_key', 'k1', '\x00', 'B-hint');
update private.app_settings set max_active_deployments = 2;
-- What the functions app sends: HMAC-SHA256 of the signed payload under the database's key.
create function pg_temp.sign(p_op text, p_user uuid, p_target uuid, p_config text, p_missing text[])
returns bytea language sql as $$
  select extensions.hmac(convert_to(private.signed_deployment_payload(p_op, p_user, p_target, p_config, p_missing), 'UTF8'),
                         private.api_signing_key(), 'sha256')
$$;
create temp table sigs (name text primary key, sig bytea not null);
grant select on sigs to public;
insert into sigs values
  ('a-first', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001', '{"tone": "dry"}', '{}')),
  ('a-unpublished', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000002', '{}', '{}')),
  ('a-none', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-0000000000ff', '{}', '{}')),
  ('a-agent', pg_temp.sign('create', 'a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001', '{}', '{}')),
  ('a-on-b', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a', 'd0000000-0000-4000-8000-0000000000b1', '{}', '{}')),
  ('a-on-deleted', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a', 'd0000000-0000-4000-8000-0000000000a9', '{}', '{}'));

-- anon: search and telemetry only ----------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';

select results_eq($$select slug from public.search_agents(q => 'pgtapqux', max_results => 100)
                     where slug like 'pgtap-%'$$,
                  array['pgtap-published'], 'anon search finds the published agent, not the unpublished one');
select results_eq($$select slug, total_count from public.search_agents(category => 'pgtap-testing')$$,
                  $$values ('pgtap-published'::text, 1::bigint)$$, 'anon category filter: published only, counted once');
select results_eq($$select slug from public.search_agents(tag => 'PGTAPZZ')$$,
                  array['pgtap-published'], 'anon tag filter (case-insensitive) returns the published agent');
select is(public.agent_search_query('Cust supp!')::text, $$'cust':* & 'supp':*$$,
          'anon may call agent_search_query: every word becomes a required prefix');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'anon', '{}', '{}', '\x00')$$,
                 '42501', 'permission denied for function create_deployment', 'anon cannot create deployments');
select throws_ok($$select private.delete_deployment('d0000000-0000-4000-8000-0000000000b1')$$,
                 '42501', 'permission denied for function delete_deployment', 'anon cannot delete deployments');
select throws_ok($$select * from private.deployment_secret_hints(array['d0000000-0000-4000-8000-0000000000b1'::uuid])$$,
                 '42501', 'permission denied for function deployment_secret_hints', 'anon cannot read secret hints');
select throws_ok($$select private.count_active_deployments('b0000000-0000-4000-8000-00000000000b')$$,
                 '42501', 'permission denied for function count_active_deployments',
                 'anon cannot call the internal helper count_active_deployments');
select lives_ok($$select private.track_event('pgtap.anon.viewed', 'a9000000-0000-4000-8000-000000000001', null, '{"src": "pgtap"}')$$,
                'anon records a telemetry event');
reset role;

-- admin: the search function still shows published agents only -------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select results_eq($$select slug from public.search_agents(category => 'pgtap-testing')$$,
                  array['pgtap-published'], 'search_agents lists published agents only, even for an admin');
reset role;

-- user A: deployments through the definer functions ---------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select name, user_id, status, status_reason, config from private.create_deployment(
                      'a9000000-0000-4000-8000-000000000001', 'A first', '{"tone": "dry"}', '{}',
                      (select sig from pg_temp.sigs where name = 'a-first'))$$,
                  $$values ('A first'::text, 'a0000000-0000-4000-8000-00000000000a'::uuid, 'active'::text, null::text,
                            '{"tone": "dry"}'::jsonb)$$,
                  'A creates a deployment from a signed config; it belongs to A and is active');
select results_eq($$select name from public.agent_deployments order by name$$,
                  array['A first'], 'A reads the new deployment through RLS');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000002', 'A hidden', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-unpublished'))$$,
                 'AMNF1', 'agent not found', 'A cannot deploy an unpublished agent');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000ff', 'A none', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-none'))$$,
                 'AMNF1', 'agent not found', 'A cannot deploy an agent that does not exist');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', '   ', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-agent'))$$,
                 '23514', null, 'the table''s check constraints still apply inside the function (blank name)');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A second', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'a-agent'))$$,
                'A creates a second active deployment (cap 2, from private.app_settings)');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A third', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'a-agent'))$$,
                 'AMLIM', 'deployment limit reached', 'a third active deployment hits the cap of 2');
reset role;
insert into pg_temp.sigs values
  ('a-first-update', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a',
                                  (select id from public.agent_deployments where name = 'A first'), '{}', '{}')),
  ('a-second-resume', pg_temp.sign('update', 'a0000000-0000-4000-8000-00000000000a',
                                   (select id from public.agent_deployments where name = 'A second'), '{}', '{}'));
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select name, status, config from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A first'), 'A renamed', '{}', '{}',
                      (select sig from pg_temp.sigs where name = 'a-first-update'), null)$$,
                  $$values ('A renamed'::text, 'active'::text, '{}'::jsonb)$$,
                  'A renames and reconfigures their own deployment (signed config)');
select results_eq($$select name, status, config from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A second'), null, null, null, null, 'paused')$$,
                  $$values ('A second'::text, 'paused'::text, '{}'::jsonb)$$,
                  'A pauses a deployment (no config, no signature needed; name and config kept)');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A third', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'a-agent'))$$,
                'a paused deployment does not count against the cap');
select throws_ok($$select * from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A second'), null, '{}', '{}',
                      (select sig from pg_temp.sigs where name = 'a-second-resume'), 'active')$$,
                 'AMLIM', 'deployment limit reached', 'resuming beyond the cap is refused');
select ok((select (private.update_deployment('d0000000-0000-4000-8000-0000000000b1', 'stolen', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'a-on-b'), null)).id is null),
          'A''s update of B''s deployment returns null');
select ok((select (private.update_deployment('d0000000-0000-4000-8000-0000000000a9', 'revived', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'a-on-deleted'), null)).id is null),
          'A''s update of their own soft-deleted deployment returns null');

select lives_ok($$select private.put_deployment_secret((select id from public.agent_deployments where name = 'A renamed'),
                                                       'api_key', 'k1', '\x01', 'sk-…aaaa')$$,
                'A stores a secret on their own deployment');
select lives_ok($$select private.put_deployment_secret((select id from public.agent_deployments where name = 'A renamed'),
                                                       'api_key', 'k2', '\x02', 'sk-…bbbb')$$,
                'storing the same field again replaces it');
select throws_ok($$select private.put_deployment_secret('d0000000-0000-4000-8000-0000000000b1', 'api_key', 'k1', '\x03', 'x')$$,
                 'AMNF2', 'deployment not found', 'A cannot store a secret on B''s deployment');
select throws_ok($$select private.put_deployment_secret('d0000000-0000-4000-8000-0000000000a9', 'api_key', 'k1', '\x03', 'x')$$,
                 'AMNF2', 'deployment not found', 'A cannot store a secret on their own soft-deleted deployment');
select results_eq($$select field, hint from private.deployment_secret_hints(
                      array[(select id from public.agent_deployments where name = 'A renamed'),
                            'd0000000-0000-4000-8000-0000000000b1'::uuid])$$,
                  $$values ('api_key'::text, 'sk-…bbbb'::text)$$,
                  'secret hints: A gets their own (latest) hint and nothing of B''s');
select throws_ok($$select * from private.deployment_secrets$$,
                 '42501', 'permission denied for table deployment_secrets', 'A still cannot read the ciphertext table');
select throws_ok($$select private.count_active_deployments('b0000000-0000-4000-8000-00000000000b')$$,
                 '42501', 'permission denied for function count_active_deployments',
                 'A cannot count B''s deployments through the internal helper');
select throws_ok($$select private.require_uid()$$,
                 '42501', 'permission denied for function require_uid', 'A cannot call the internal helper require_uid');

select is(private.delete_deployment('d0000000-0000-4000-8000-0000000000b1'), false,
          'A''s delete of B''s deployment returns false');
select is(private.delete_deployment((select id from public.agent_deployments where name = 'A renamed')), true,
          'A deletes their own deployment');
select results_eq($$select name from public.agent_deployments order by name$$,
                  array['A second', 'A third'], 'the deleted deployment disappears from A''s list');
select is(private.delete_deployment((select id from public.agent_deployments where name = 'A second')), true,
          'A deletes their paused deployment');
select lives_ok($$select private.track_event('pgtap.user.viewed', 'a9000000-0000-4000-8000-000000000001', null, null)$$,
                'A records a telemetry event');
reset role;

-- authenticated without a sub: the functions refuse ------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"role": "authenticated"}';
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'nobody', '{}', '{}', '\x00')$$,
                 '42501', 'not signed in', 'create_deployment without a user id is refused');
select throws_ok($$select private.delete_deployment('d0000000-0000-4000-8000-0000000000b1')$$,
                 '42501', 'not signed in', 'delete_deployment without a user id is refused');
reset role;

-- read back as postgres ------------------------------------------------------------------------------------------
select results_eq($$select name, status, deleted_at is not null, status_reason from public.agent_deployments
                     where user_id = 'a0000000-0000-4000-8000-00000000000a' and name <> 'A deleted' order by name$$,
                  $$values ('A renamed'::text, 'paused'::text, true, 'deleted'::text),
                           ('A second', 'paused', true, 'deleted'),
                           ('A third', 'active', false, null)$$,
                  'delete_deployment soft-deletes (paused, reason deleted); the rest is as A left it');
select is((select count(*)::int from private.deployment_secrets s join public.agent_deployments d on d.id = s.deployment_id
            where d.user_id = 'a0000000-0000-4000-8000-00000000000a'), 0,
          'deleting a deployment removes its secrets');
select results_eq($$select name, deleted_at is null, status from public.agent_deployments
                     where id = 'd0000000-0000-4000-8000-0000000000b1'$$,
                  $$values ('B live'::text, true, 'configuring'::text)$$, 'B''s deployment is untouched');
select results_eq($$select hint, key_id from private.deployment_secrets where deployment_id = 'd0000000-0000-4000-8000-0000000000b1'$$,
                  $$values ('B-hint'::text, 'k1'::text)$$, 'B''s secret is untouched');
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-published'), 2,
          'deploy_count counts B''s deployment and A''s one remaining live deployment');
select results_eq($$select name, user_id, properties from private.telemetry_events where name like 'pgtap.%' order by name$$,
                  $$values ('pgtap.anon.viewed'::text, null::uuid, '{"src": "pgtap"}'::jsonb),
                           ('pgtap.user.viewed', 'a0000000-0000-4000-8000-00000000000a', '{}')$$,
                  'track_event takes the user from the claims (null for anon) and defaults properties to {}');

-- service_role (the worker / operator tools) may execute the private functions too ----------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select is(private.count_active_deployments('a0000000-0000-4000-8000-00000000000a'), 1,
          'service_role may execute internal helpers (A has 1 active deployment)');
select results_eq($$select slug from public.search_agents(category => 'pgtap-testing')$$,
                  array['pgtap-published'], 'service_role search also lists published agents only');
select lives_ok($$insert into public.marketplace_agents (slug, name, category, kind, pricing_model, tags)
                  values ('pgtap-service', 'pgTAP service', 'testing', 'chat', 'free', array['x'])$$,
                'service_role inserts an agent (generated columns call private functions it may execute)');
reset role;

select * from finish();
rollback;
