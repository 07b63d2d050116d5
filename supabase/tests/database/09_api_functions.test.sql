-- The API functions of 20261129130000_marketplace_api.sql, called exactly as the HTTP functions call
-- them: as the caller's role (anon / authenticated) with the caller's claims.
--   * public.search_agents / public.agent_search_query: SECURITY INVOKER catalog search (published only);
--   * private.create_deployment / update_deployment / delete_deployment / put_deployment_secret /
--     deployment_secret_hints: SECURITY DEFINER, authenticated only, act on the caller's own rows only;
--   * private.track_event: anon and authenticated, the user id comes from the claims.
-- Custom SQLSTATEs: AMNF1 agent not found, AMNF2 deployment not found, AMLIM deployment limit reached.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(46);

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
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'anon', '{}', 'active', null, 5)$$,
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

select results_eq($$select name, user_id, status, config from private.create_deployment(
                      'a9000000-0000-4000-8000-000000000001', 'A first', '{"tone": "dry"}', 'active', null, 2)$$,
                  $$values ('A first'::text, 'a0000000-0000-4000-8000-00000000000a'::uuid, 'active'::text, '{"tone": "dry"}'::jsonb)$$,
                  'A creates a deployment; it belongs to A');
select results_eq($$select name from public.agent_deployments order by name$$,
                  array['A first'], 'A reads the new deployment through RLS');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000002', 'A hidden', '{}', 'active', null, 5)$$,
                 'AMNF1', 'agent not found', 'A cannot deploy an unpublished agent');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000ff', 'A none', '{}', 'active', null, 5)$$,
                 'AMNF1', 'agent not found', 'A cannot deploy an agent that does not exist');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A second', '{}', 'active', null, 2)$$,
                'A creates a second active deployment (cap 2)');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A third', '{}', 'active', null, 2)$$,
                 'AMLIM', 'deployment limit reached', 'a third active deployment hits the cap of 2');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'A paused', '{}', 'paused', null, 2)$$,
                'a paused deployment does not count against the cap');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', '   ', '{}', 'active', null, 9)$$,
                 '23514', null, 'the table''s check constraints still apply inside the function (blank name)');

select results_eq($$select name, status from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A first'), 'A renamed', '{}', 'active', null, 2)$$,
                  $$values ('A renamed'::text, 'active'::text)$$, 'A updates their own deployment');
select throws_ok($$select * from private.update_deployment(
                      (select id from public.agent_deployments where name = 'A paused'), 'A paused', '{}', 'active', null, 2)$$,
                 'AMLIM', 'deployment limit reached', 'unpausing beyond the cap is refused');
select ok((select (private.update_deployment('d0000000-0000-4000-8000-0000000000b1', 'stolen', '{}', 'active', null, 9)).id is null),
          'A''s update of B''s deployment returns null');
select ok((select (private.update_deployment('d0000000-0000-4000-8000-0000000000a9', 'revived', '{}', 'active', null, 9)).id is null),
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
                  array['A paused', 'A second'], 'the deleted deployment disappears from A''s list');
select is(private.delete_deployment((select id from public.agent_deployments where name = 'A paused')), true,
          'A deletes their paused deployment');
select lives_ok($$select private.track_event('pgtap.user.viewed', 'a9000000-0000-4000-8000-000000000001', null, null)$$,
                'A records a telemetry event');
reset role;

-- authenticated without a sub: the functions refuse ------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"role": "authenticated"}';
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-000000000001', 'nobody', '{}', 'active', null, 5)$$,
                 '42501', 'not signed in', 'create_deployment without a user id is refused');
select throws_ok($$select private.delete_deployment('d0000000-0000-4000-8000-0000000000b1')$$,
                 '42501', 'not signed in', 'delete_deployment without a user id is refused');
reset role;

-- read back as postgres ------------------------------------------------------------------------------------------
select results_eq($$select name, status, deleted_at is not null, status_reason from public.agent_deployments
                     where user_id = 'a0000000-0000-4000-8000-00000000000a' and name <> 'A deleted' order by name$$,
                  $$values ('A paused'::text, 'paused'::text, true, 'deleted'::text),
                           ('A renamed', 'paused', true, 'deleted'),
                           ('A second', 'active', false, null)$$,
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
