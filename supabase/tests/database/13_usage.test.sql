-- private.my_usage() (20261130130100_usage.sql): the caller's limits and where they stand. Each
-- user sees only their own numbers (A's chat quota, replies in flight, deployments, platform-key
-- tokens and this month's messages and tokens; B's the same from B's rows), nothing is taken from
-- the quota, and neither anon nor a caller without a user may call it. The HTTP route is
-- tests/api/test_usage.py.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(14);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
update private.app_settings
   set chat_per_minute = 20, max_in_flight_per_user = 4, max_active_deployments = 5,
       max_deployments_per_user = 7, platform_tokens_per_day = 5000;

insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-usage', 'pgTAP usage', 'testing', 'chat', 'free', true);

-- A: active, configuring (both count toward the active cap), paused, deleted; B: one active.
insert into public.agent_deployments (id, user_id, agent_id, name, status, deleted_at) values
  ('d0000000-0000-4000-8000-00000000000a', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A active', 'active', null),
  ('d0000000-0000-4000-8000-0000000000a2', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A configuring', 'configuring', null),
  ('d0000000-0000-4000-8000-0000000000a3', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A paused', 'paused', null),
  ('d0000000-0000-4000-8000-0000000000a4', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A deleted', 'active', now()),
  ('d0000000-0000-4000-8000-00000000000b', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000001', 'B active', 'active', null);
insert into public.agent_conversations (id, deployment_id, user_id) values
  ('c0000000-0000-4000-8000-00000000000a', 'd0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a'),
  ('c0000000-0000-4000-8000-00000000000b', 'd0000000-0000-4000-8000-00000000000b',
   'b0000000-0000-4000-8000-00000000000b');

create temp table month_start as
  select date_trunc('month', now() at time zone 'utc') at time zone 'utc' as at;

-- A this month: two questions, one answered (10 + 5 tokens), one still queued; last month: one
-- answered question (100 + 50 tokens), which does not count. B this month: one question, answered
-- with 7 + 3 tokens.
insert into public.agent_messages
  (id, conversation_id, user_id, role, content, status, reply_to, prompt_tokens, completion_tokens,
   created_at, completed_at) values
  ('e0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'one', 'completed', null, null, null,
   (select at from month_start) + interval '1 second', (select at from month_start) + interval '1 second'),
  ('e0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'answer', 'completed',
   'e0000000-0000-4000-8000-000000000001', 10, 5,
   (select at from month_start) + interval '2 seconds', (select at from month_start) + interval '3 seconds'),
  ('e0000000-0000-4000-8000-000000000003', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'two', 'completed', null, null, null,
   now(), now()),
  ('e0000000-0000-4000-8000-000000000004', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', '', 'queued',
   'e0000000-0000-4000-8000-000000000003', null, null, now(), null),
  ('e0000000-0000-4000-8000-000000000005', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'old', 'completed', null, null, null,
   (select at from month_start) - interval '1 day', (select at from month_start) - interval '1 day'),
  ('e0000000-0000-4000-8000-000000000006', 'c0000000-0000-4000-8000-00000000000a',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'old answer', 'completed',
   'e0000000-0000-4000-8000-000000000005', 100, 50,
   (select at from month_start) - interval '1 day', (select at from month_start) - interval '1 day'),
  ('e0000000-0000-4000-8000-000000000007', 'c0000000-0000-4000-8000-00000000000b',
   'b0000000-0000-4000-8000-00000000000b', 'user', 'hi', 'completed', null, null, null,
   now(), now()),
  ('e0000000-0000-4000-8000-000000000008', 'c0000000-0000-4000-8000-00000000000b',
   'b0000000-0000-4000-8000-00000000000b', 'assistant', 'hello', 'completed',
   'e0000000-0000-4000-8000-000000000007', 7, 3, now(), now());

-- Platform-key tokens: A today and yesterday (only today counts); B none.
insert into private.platform_token_usage (user_id, day, tokens) values
  ('a0000000-0000-4000-8000-00000000000a', (now() at time zone 'utc')::date, 1234),
  ('a0000000-0000-4000-8000-00000000000a', (now() at time zone 'utc')::date - 1, 999);

-- A has taken 3 of 20 chat messages just now (one every 3 s: the quota is whole again in 9 s).
insert into private.rate_limits (key, tat)
values ('chat:a0000000-0000-4000-8000-00000000000a', clock_timestamp() + interval '9 seconds');
create temp table tat_before as
  select tat from private.rate_limits where key = 'chat:a0000000-0000-4000-8000-00000000000a';

-- A sees A's numbers ---------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select is(private.my_usage() -> 'chat', '{"limit": 20, "remaining": 17, "reset_seconds": 9}'::jsonb,
          'A: the chat quota is peeked (3 of 20 taken, whole again in 9 s)');
select is(private.my_usage() -> 'in_flight', '{"limit": 4, "current": 1}'::jsonb,
          'A: one reply queued, of 4 allowed in flight');
select is(private.my_usage() -> 'deployments',
          '{"active": 2, "active_limit": 5, "total": 3, "total_limit": 7}'::jsonb,
          'A: active and configuring count toward the active cap; paused counts in the total; deleted in neither');
select is(private.my_usage() -> 'platform_tokens', '{"used_today": 1234, "budget_per_day": 5000}'::jsonb,
          'A: today''s platform-key tokens (yesterday''s do not count)');
select is(private.my_usage() -> 'month', '{"messages": 2, "prompt_tokens": 10, "completion_tokens": 5}'::jsonb,
          'A: this month''s questions and reply tokens (last month''s do not count)');
select is((select array_agg(k order by k) from jsonb_object_keys(private.my_usage()) k),
          array['chat', 'deployments', 'in_flight', 'month', 'platform_tokens'],
          'the report has exactly its five parts');

-- B sees B's numbers ---------------------------------------------------------------------------------
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {}}';

select is(private.my_usage(),
          '{"chat": {"limit": 20, "remaining": 20, "reset_seconds": 0},
            "in_flight": {"limit": 4, "current": 0},
            "deployments": {"active": 1, "active_limit": 5, "total": 1, "total_limit": 7},
            "platform_tokens": {"used_today": 0, "budget_per_day": 5000},
            "month": {"messages": 1, "prompt_tokens": 7, "completion_tokens": 3}}'::jsonb,
          'B sees only B''s numbers (a whole quota, nothing in flight, no platform tokens)');

-- Refused callers ------------------------------------------------------------------------------------
set local request.jwt.claims to '{"role": "authenticated"}';
select throws_ok($$select private.my_usage()$$, '42501', 'not signed in',
                 'authenticated without a user id is refused');

reset role;
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select private.my_usage()$$, '42501', 'permission denied for function my_usage',
                 'anon may not execute private.my_usage');
reset role;

-- Nothing was taken ----------------------------------------------------------------------------------
select is((select tat from private.rate_limits where key = 'chat:a0000000-0000-4000-8000-00000000000a'),
          (select tat from tat_before), 'peeking left A''s chat quota as it was');
select is_empty($$select 1 from private.rate_limits where key = 'chat:b0000000-0000-4000-8000-00000000000b'$$,
                'peeking stored no quota for B');

-- Grants and the index -------------------------------------------------------------------------------
select function_privs_are('private', 'my_usage', array[]::name[], 'authenticated', array['EXECUTE'],
                          'authenticated may execute private.my_usage()');
select function_privs_are('private', 'my_usage', array[]::name[], 'anon', array[]::name[],
                          'anon may not execute private.my_usage()');
select has_index('public', 'agent_messages', 'agent_messages_user_created_idx',
                 array['user_id', 'created_at'], 'agent_messages is indexed on (user_id, created_at)');

select * from finish();
rollback;
