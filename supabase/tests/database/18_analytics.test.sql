-- Admin analytics (20261130180000_admin_analytics.sql): private.is_admin() reads app_metadata.role
-- from the verified claims (never user_metadata) for anon, two ordinary users, a user who put
-- role=admin in their own user_metadata, and an admin; private.marketplace_stats /
-- marketplace_metrics refuse everyone but an admin (AMADM), check the range (AMRNG) and the time
-- zone (AMTZN), and answer an admin with the whole marketplace's numbers (both users' rows);
-- the grants are exactly these; the rollups and the presence bitmaps are out of the API roles'
-- reach and in service_role's. The HTTP routes are tests/api/test_admin_stats.py.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(83);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000018', 'pgtap-analytics', 'pgTAP analytics', 'testing', 'chat', 'free', true);
insert into public.agent_deployments (id, user_id, agent_id, name, status, created_at) values
  ('d0000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000018', 'A', 'active', '2026-11-02 10:00+00'),
  ('d0000000-0000-4000-8000-00000000000b', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000018', 'B', 'active', '2026-11-03 10:00+00');
insert into public.agent_conversations (id, deployment_id, user_id, created_at) values
  ('c0000000-0000-4000-8000-00000000000a', 'd0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', '2026-11-02 10:01+00'),
  ('c0000000-0000-4000-8000-00000000000b', 'd0000000-0000-4000-8000-00000000000b',
   'b0000000-0000-4000-8000-00000000000b', '2026-11-03 10:01+00');
insert into public.agent_messages
  (id, conversation_id, user_id, role, content, status, reply_to, latency_ms, created_at, completed_at) values
  ('e0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'q', 'completed', null, null,
   '2026-11-02 10:02+00', '2026-11-02 10:02+00'),
  ('e0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'a', 'completed',
   'e0000000-0000-4000-8000-000000000001', 400, '2026-11-02 10:03+00', '2026-11-02 10:04+00'),
  ('e0000000-0000-4000-8000-000000000003', 'c0000000-0000-4000-8000-00000000000b',
   'b0000000-0000-4000-8000-00000000000b', 'user', 'q', 'completed', null, null,
   '2026-11-03 10:02+00', '2026-11-03 10:02+00'),
  ('e0000000-0000-4000-8000-000000000004', 'c0000000-0000-4000-8000-00000000000b',
   'b0000000-0000-4000-8000-00000000000b', 'assistant', 'a', 'completed',
   'e0000000-0000-4000-8000-000000000003', 800, '2026-11-03 10:03+00', '2026-11-03 10:04+00');

-- is_admin(): who is an admin ---------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role":"anon"}';
select is(private.is_admin(), false, 'anon is not an admin');
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub":"a0000000-0000-4000-8000-00000000000a","role":"authenticated","app_metadata":{}}';
select is(private.is_admin(), false, 'user A is not an admin');
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub":"b0000000-0000-4000-8000-00000000000b","role":"authenticated","app_metadata":{"role":"user"}}';
select is(private.is_admin(), false, 'user B (another app_metadata role) is not an admin');
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub":"b0000000-0000-4000-8000-00000000000b","role":"authenticated","app_metadata":{},"user_metadata":{"role":"admin"}}';
select is(private.is_admin(), false, 'user_metadata.role = admin (the user''s own to write) is not admin');
select throws_ok($$ select private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC') $$,
                 'AMADM', 'admins only', 'user_metadata admin is refused the stats');
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub":"a0000000-0000-4000-8000-00000000000a","role":"authenticated","app_metadata":{}}';
select throws_ok($$ select private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC') $$,
                 'AMADM', 'admins only', 'user A is refused the stats');
select throws_ok($$ select private.marketplace_metrics('2026-11-01', '2026-11-07', 'UTC') $$,
                 'AMADM', 'admins only', 'user A is refused the metrics');
select throws_ok($$ select private.marketplace_stats('2026-11-07', '2026-11-01', 'Nowhere/Land') $$,
                 'AMADM', 'admins only', 'a non-admin learns nothing about the arguments');
reset role;

set local role anon;
set local request.jwt.claims to '{"role":"anon"}';
select throws_ok($$ select private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC') $$,
                 '42501', null, 'anon may not execute marketplace_stats');
select throws_ok($$ select private.marketplace_metrics('2026-11-01', '2026-11-07', 'UTC') $$,
                 '42501', null, 'anon may not execute marketplace_metrics');
reset role;

-- An admin -----------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"sub":"a0000000-0000-4000-8000-00000000000a","role":"authenticated","app_metadata":{"role":"admin"}}';
select is(private.is_admin(), true, 'app_metadata.role = admin is an admin');
select is(
  private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC', 'pgtap-analytics') -> 'totals',
  '{"deployments": 2, "conversations": 2, "user_messages": 2, "unique_users": 2}'::jsonb,
  'the admin sees both users'' rows');
select is(
  jsonb_array_length(private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC', 'pgtap-analytics') -> 'days'),
  7, 'every day of the range is present');
select is(
  private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC', 'pgtap-analytics') -> 'days' -> 0,
  '{"day": "2026-11-01", "deployments": 0, "conversations": 0, "user_messages": 0, "unique_users": 0}'::jsonb,
  'a day without activity is zero-filled');
select is(
  private.marketplace_stats('2026-11-01', '2026-11-07', 'UTC', 'pgtap-analytics') -> 'now',
  '{"active_deployments": 2, "active_agents": 1}'::jsonb,
  'active deployments and agents now');
select is(
  private.marketplace_metrics('2026-11-01', '2026-11-07', 'UTC', 'pgtap-analytics') -> 'overall' -> 'latency_ms',
  '{"p50": 600.0, "p95": 780.0, "p99": 796.0}'::jsonb,
  'latency percentiles are continuous (percentile_cont)');
select is(
  (private.marketplace_metrics('2026-11-01', '2026-11-07', 'UTC', 'pgtap-analytics') -> 'overall' ->> 'replies')::int,
  2, 'both users'' replies count');
select is(
  private.marketplace_stats('2026-11-02', '2026-11-02', 'Asia/Tokyo', 'pgtap-analytics') -> 'totals' -> 'user_messages',
  '1'::jsonb, 'days are counted in the given time zone (10:02 UTC on the 3rd is the 3rd in Tokyo)');
select throws_ok($$ select private.marketplace_stats('2026-11-07', '2026-11-01', 'UTC') $$,
                 'AMRNG', null, 'a reversed range is refused');
select throws_ok($$ select private.marketplace_metrics('2025-11-01', '2026-11-03', 'UTC') $$,
                 'AMRNG', null, 'a range over 366 days is refused');
select lives_ok($$ select private.marketplace_metrics('2025-11-01', '2026-11-02', 'UTC') $$,
                'a range of exactly 366 days is answered');
select throws_ok($$ select private.marketplace_stats('2026-11-01', '2026-11-07', 'Nowhere/Land') $$,
                 'AMTZN', null, 'an unknown time zone is refused');
reset role;

-- Grants -------------------------------------------------------------------------------------------
select function_privs_are('private', 'marketplace_stats', array['date', 'date', 'text', 'text', 'text', 'text'],
                          'authenticated', array['EXECUTE'], 'authenticated may execute marketplace_stats');
select function_privs_are('private', 'marketplace_metrics', array['date', 'date', 'text', 'text', 'text', 'text'],
                          'authenticated', array['EXECUTE'], 'authenticated may execute marketplace_metrics');
select function_privs_are('private', 'marketplace_stats', array['date', 'date', 'text', 'text', 'text', 'text'],
                          'anon', array[]::text[], 'anon may not execute marketplace_stats');
select function_privs_are('private', 'require_admin', array[]::text[],
                          'authenticated', array[]::text[], 'the helpers are not the API');
select ok((select p.prosecdef from pg_proc p where p.oid = 'private.marketplace_stats(date,date,text,text,text,text)'::regprocedure)
          and not (select p.prosecdef from pg_proc p where p.oid = 'private.is_admin()'::regprocedure),
          'the reports are SECURITY DEFINER, is_admin is not');

-- The rollups: private, RLS on, nothing for the API roles.
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_hourly_cells'::regclass),
          'RLS enabled on private.analytics_hourly_cells');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_hourly_changes'::regclass),
          'RLS enabled on private.analytics_hourly_changes');
select table_privs_are('private', 'analytics_hourly_changes', 'anon', array[]::text[],
                       'anon has no privileges on private.analytics_hourly_changes');
select table_privs_are('private', 'analytics_hourly_changes', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_hourly_changes');
select table_privs_are('private', 'analytics_hourly', 'anon', array[]::text[], 'anon has no privileges on private.analytics_hourly');
select table_privs_are('private', 'analytics_hourly', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_hourly');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_user_hours'::regclass),
          'RLS enabled on private.analytics_user_hours');
select table_privs_are('private', 'analytics_user_hours', 'anon', array[]::text[], 'anon has no privileges on private.analytics_user_hours');
select table_privs_are('private', 'analytics_user_hours', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_user_hours');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_replies'::regclass),
          'RLS enabled on private.analytics_replies');
select table_privs_are('private', 'analytics_replies', 'anon', array[]::text[], 'anon has no privileges on private.analytics_replies');
select table_privs_are('private', 'analytics_replies', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_replies');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_feedback'::regclass),
          'RLS enabled on private.analytics_feedback');
select table_privs_are('private', 'analytics_feedback', 'anon', array[]::text[], 'anon has no privileges on private.analytics_feedback');
select table_privs_are('private', 'analytics_feedback', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_feedback');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_conversation_agents'::regclass),
          'RLS enabled on private.analytics_conversation_agents');
select table_privs_are('private', 'analytics_conversation_agents', 'anon', array[]::text[], 'anon has no privileges on private.analytics_conversation_agents');
select table_privs_are('private', 'analytics_conversation_agents', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_conversation_agents');

-- The presence bitmaps (20261130190000_analytics_presence_bitmaps.sql): private, RLS on, nothing
-- for the API roles, everything for service_role.
select ok((select relrowsecurity from pg_class where oid = ('private.' || t)::regclass),
          'RLS enabled on private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;
select table_privs_are('private', t, 'anon', array[]::text[], 'anon has no privileges on private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;
select table_privs_are('private', t, 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;
select ok(has_table_privilege('service_role', 'private.' || t, 'select, insert, update, delete, truncate'),
          'service_role may read and write private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;

select function_privs_are('private', f.name, f.args, r.role, array[]::text[],
                          r.role || ' may not execute private.' || f.name)
  from (values ('analytics_rebuild_base', array[]::text[]),
               ('analytics_rebuild_presence', array[]::text[]),
               ('analytics_user_key', array['uuid']),
               ('analytics_presence_add', array['timestamp with time zone', 'uuid', 'uuid']),
               ('analytics_presence_remove', array['timestamp with time zone', 'uuid', 'uuid'])) f (name, args),
       (values ('anon'), ('authenticated')) r (role);
select function_privs_are('private', f.name, f.args, 'service_role', array['EXECUTE'],
                          'service_role may execute private.' || f.name)
  from (values ('analytics_rebuild_base', array[]::text[]),
               ('analytics_rebuild_presence', array[]::text[]),
               ('analytics_user_key', array['uuid']),
               ('analytics_presence_add', array['timestamp with time zone', 'uuid', 'uuid']),
               ('analytics_presence_remove', array['timestamp with time zone', 'uuid', 'uuid'])) f (name, args);

set local role anon;
set local request.jwt.claims to '{"role":"anon"}';
select throws_ok(format('select count(*) from private.%I', t), '42501', null,
                 'anon cannot read private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;
reset role;

set local role authenticated;
set local request.jwt.claims to '{"sub":"a0000000-0000-4000-8000-00000000000a","role":"authenticated","app_metadata":{"role":"admin"}}';
select throws_ok(format('select count(*) from private.%I', t), '42501', null,
                 'authenticated (even an admin) cannot read private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;
select throws_ok($$ select private.analytics_rebuild_presence() $$, '42501', null,
                 'authenticated may not rebuild the bitmaps');
reset role;

set local role service_role;
select lives_ok(format('select count(*) from private.%I', t), 'service_role reads private.' || t)
  from unnest(array['analytics_user_keys', 'analytics_presence_hours', 'analytics_presence_days']) t;
-- (analytics_rebuild_presence() alone restarts the numbering, which takes the owner; the
-- SECURITY DEFINER analytics_rebuild() runs it as the owner.)
select lives_ok($$ select private.analytics_rebuild() $$, 'service_role may rebuild the rollups and the bitmaps');
reset role;

select * from finish();
rollback;
