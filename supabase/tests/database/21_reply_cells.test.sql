-- The replies' cells (20261130190100_analytics_reply_cells.sql, 20261201010000_analytics_change_rows.sql):
-- a reply enters its hour cell and its agent's day cell when it finishes, with its durations in
-- the histograms (10^(10·bucket)), leaves them when it is deleted; a finish writes one change row
-- (no cell row) that the views add until the fold moves it into the cells; the cells are private
-- (RLS on, nothing for anon or authenticated) and the cells' report is not the API. The recount and the report's agreement with
-- the exact one are tests/integration/test_analytics_histograms.py.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(30);

insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000021a', 'pgtap-cells@example.test', '{}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000021', 'pgtap-cells', 'pgTAP cells', 'testing', 'chat', 'free', true);
insert into public.agent_deployments (id, user_id, agent_id, name, status, created_at) values
  ('d0000000-0000-4000-8000-00000000021a', 'a0000000-0000-4000-8000-00000000021a',
   'a9000000-0000-4000-8000-000000000021', 'A', 'active', '2026-11-02 10:00+00');
insert into public.agent_conversations (id, deployment_id, user_id, created_at) values
  ('c0000000-0000-4000-8000-00000000021a', 'd0000000-0000-4000-8000-00000000021a',
   'a0000000-0000-4000-8000-00000000021a', '2026-11-02 10:01+00');
insert into public.agent_messages
  (id, conversation_id, user_id, role, content, status, reply_to, created_at, completed_at) values
  ('e0000000-0000-4000-8000-000000000211', 'c0000000-0000-4000-8000-00000000021a',
   'a0000000-0000-4000-8000-00000000021a', 'user', 'q', 'completed', null,
   '2026-11-02 10:02+00', '2026-11-02 10:02+00'),
  ('e0000000-0000-4000-8000-000000000212', 'c0000000-0000-4000-8000-00000000021a',
   'a0000000-0000-4000-8000-00000000021a', 'assistant', '', 'running',
   'e0000000-0000-4000-8000-000000000211', '2026-11-02 10:03+00', null);

select is((select count(*) from private.analytics_reply_hours where hour = '2026-11-02 10:00+00'), 0::bigint,
          'a running reply is in no cell');

update public.agent_messages
   set status = 'completed', content = 'a', latency_ms = 1000, ttft_ms = 40, prompt_tokens = 5,
       completion_tokens = 7, completed_at = '2026-11-02 10:04+00'
 where id = 'e0000000-0000-4000-8000-000000000212';

select is((select count(*) from private.analytics_reply_changes), 1::bigint,
          'the finish wrote one change row');
select is((select count(*) from private.analytics_reply_hour_cells where hour = '2026-11-02 10:00+00'), 0::bigint,
          'and no cell row');
select is(private.analytics_bucket(1000), 190::smallint, '1000 ms is bucket 190 (64 + 32·(9 - 6) + (1000 >> 4) - 32)');
select is(private.analytics_bucket(40), 40::smallint, 'below 64 ms a bucket is the duration');
select row_eq($$ select sum(replies)::int, sum(completed)::int, sum(failed)::int,
                         sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint
                  from private.analytics_reply_hours where hour = '2026-11-02 10:00+00' $$,
              row(1, 1, 0, 5::bigint, 7::bigint),
              'the finished reply is counted in its UTC hour');
select is((select sum(latency) from private.analytics_reply_hours where hour = '2026-11-02 10:00+00'),
          ('1e' || 10 * 190)::numeric, 'its latency is one count in bucket 190');
select is((select sum(ttft) from private.analytics_reply_days
            where day = '2026-11-02' and agent_id = 'a9000000-0000-4000-8000-000000000021'),
          ('1e' || 10 * 40)::numeric, 'its time to first token is one count in bucket 40 of its agent''s day');

select is((select count(*) from private.analytics_hourly_changes), 3::bigint,
          'the deployment, the conversation and the question wrote one hourly change row each');
select is(private.analytics_fold(), 4, 'the fold moves the four changes');
select row_eq($$ select replies, completed, failed, prompt_tokens, completion_tokens, latency
                  from private.analytics_reply_hour_cells where hour = '2026-11-02 10:00+00' $$,
              row(1, 1, 0, 5::bigint, 7::bigint, ('1e' || 10 * 190)::numeric),
              'into its hour cell');
select is((select count(*) from private.analytics_reply_changes), 0::bigint, 'and no change is left');

insert into private.telemetry_events (name, user_id, deployment_id, created_at) values
  ('agent.chat.rate_limited', 'a0000000-0000-4000-8000-00000000021a',
   'd0000000-0000-4000-8000-00000000021a', '2026-11-02 10:30+00'),
  ('agent.chat.rate_limited', 'a0000000-0000-4000-8000-00000000021a', null, '2026-11-02 10:31+00'),
  ('marketplace.agent.viewed', 'a0000000-0000-4000-8000-00000000021a',
   'd0000000-0000-4000-8000-00000000021a', '2026-11-02 10:32+00');
select is((select sum(rate_limited)::int from private.analytics_reply_hours where hour = '2026-11-02 10:00+00'), 1,
          'a refused send of a deployment counts in its hour (not one without a deployment, nor another event)');
delete from public.agent_conversations where id = 'c0000000-0000-4000-8000-00000000021a';
select row_eq($$ select sum(replies)::int, sum(completed)::int, sum(latency), sum(ttft)
                  from private.analytics_reply_days
                 where day = '2026-11-02' and agent_id = 'a9000000-0000-4000-8000-000000000021' $$,
              row(0, 0, 0::numeric, 0::numeric),
              'deleting the conversation takes the reply out again');

delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-00000000021a';
select is((select sum(rate_limited)::int from private.analytics_reply_days
            where day = '2026-11-02' and agent_id = 'a9000000-0000-4000-8000-000000000021'), 0,
          'deleting the deployment takes its refused sends out of its agent''s day');
select is((select sum(rate_limited)::int from private.analytics_reply_hours where hour = '2026-11-02 10:00+00'), 0,
          'and out of the hour');

select ok((select relrowsecurity from pg_class where oid = 'private.analytics_reply_hour_cells'::regclass),
          'RLS enabled on private.analytics_reply_hour_cells');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_reply_day_cells'::regclass),
          'RLS enabled on private.analytics_reply_day_cells');
select ok((select relrowsecurity from pg_class where oid = 'private.analytics_reply_changes'::regclass),
          'RLS enabled on private.analytics_reply_changes');
select table_privs_are('private', 'analytics_reply_changes', 'anon', array[]::text[],
                       'anon has no privileges on private.analytics_reply_changes');
select table_privs_are('private', 'analytics_reply_changes', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_reply_changes');
select function_privs_are('private', 'analytics_fold', array[]::text[],
                          'authenticated', array[]::text[], 'authenticated cannot fold');
select table_privs_are('private', 'analytics_reply_hours', 'anon', array[]::text[],
                       'anon has no privileges on private.analytics_reply_hours');
select table_privs_are('private', 'analytics_reply_hours', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_reply_hours');
select table_privs_are('private', 'analytics_reply_days', 'anon', array[]::text[],
                       'anon has no privileges on private.analytics_reply_days');
select table_privs_are('private', 'analytics_reply_days', 'authenticated', array[]::text[],
                       'authenticated has no privileges on private.analytics_reply_days');
select function_privs_are('private', 'marketplace_metrics_cells', array['date', 'date', 'text'],
                          'authenticated', array[]::text[], 'the cells'' report is not the API');

set local role service_role;
select lives_ok($$ select count(*) from private.analytics_reply_days $$, 'service_role reads the cells');
select lives_ok($$ select private.analytics_fold() $$, 'service_role (the worker) folds');
reset role;

set local role authenticated;
select set_config('request.jwt.claims', '{"sub": "a0000000-0000-4000-8000-00000000021a", "role": "authenticated"}', true);
select throws_ok($$ select * from private.analytics_reply_hours $$, '42501', null,
                 'a signed-in user cannot read the cells');
reset role;

select * from finish();
rollback;
