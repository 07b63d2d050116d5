-- public.agent_conversations and public.agent_messages: owners read their own rows; nobody writes
-- through the API (the functions and the worker do, as service_role); anon has no grant.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(39);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}'),
  ('c0000000-0000-4000-8000-00000000000c', 'pgtap-admin@example.test', '{"role": "admin"}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-published', 'pgTAP published', 'testing', 'chat', 'free', true);
insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A live'),
  ('d0000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000001', 'B live');
insert into public.agent_conversations (id, deployment_id, user_id, title) values
  ('c0000000-0000-4000-8000-0000000000a1', 'd0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-00000000000a', 'A conversation'),
  ('c0000000-0000-4000-8000-0000000000b1', 'd0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-00000000000b', 'B conversation');
insert into public.agent_messages (id, conversation_id, user_id, role, content, status, reply_to, completed_at) values
  ('e0000000-0000-4000-8000-0000000000a1', 'c0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'A asks', 'completed', null, null),
  ('e0000000-0000-4000-8000-0000000000a2', 'c0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'A answered', 'completed',
   'e0000000-0000-4000-8000-0000000000a1', now()),
  ('e0000000-0000-4000-8000-0000000000b1', 'c0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-00000000000b', 'user', 'B asks', 'completed', null, null),
  ('e0000000-0000-4000-8000-0000000000b2', 'c0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-00000000000b', 'assistant', 'B answered', 'completed',
   'e0000000-0000-4000-8000-0000000000b1', now());

-- user A -------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select title from public.agent_conversations order by title$$,
                  array['A conversation'], 'A sees exactly their own conversation');
select is_empty($$select 1 from public.agent_conversations where id = 'c0000000-0000-4000-8000-0000000000b1'$$,
                'A cannot read B''s conversation by id');
select results_eq($$select content from public.agent_messages order by created_at, role desc$$,
                  array['A asks', 'A answered'], 'A sees exactly their own messages');
select is_empty($$select 1 from public.agent_messages where conversation_id = 'c0000000-0000-4000-8000-0000000000b1'$$,
                'A cannot read B''s messages by conversation id');
select results_eq($$select m.content from public.agent_messages m
                      join public.agent_conversations c on c.id = m.conversation_id
                     where c.deployment_id = 'd0000000-0000-4000-8000-0000000000a1' and m.role = 'assistant'$$,
                  array['A answered'], 'A joins their conversations and messages');

select throws_ok($$insert into public.agent_conversations (deployment_id, title)
                   values ('d0000000-0000-4000-8000-0000000000a1', 'direct')$$,
                 '42501', 'permission denied for table agent_conversations', 'A cannot insert a conversation');
select throws_ok($$update public.agent_conversations set title = 'renamed'
                    where id = 'c0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table agent_conversations', 'A cannot update their conversation');
select throws_ok($$delete from public.agent_conversations where id = 'c0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table agent_conversations', 'A cannot delete their conversation');
select throws_ok($$insert into public.agent_messages (conversation_id, role, content, status)
                   values ('c0000000-0000-4000-8000-0000000000a1', 'user', 'direct', 'completed')$$,
                 '42501', 'permission denied for table agent_messages',
                 'A cannot insert a message (it would skip rate limits and the queue)');
select throws_ok($$update public.agent_messages set content = 'edited' where id = 'e0000000-0000-4000-8000-0000000000a2'$$,
                 '42501', 'permission denied for table agent_messages', 'A cannot update their messages');
select throws_ok($$update public.agent_messages set prompt_tokens = 0, completion_tokens = 0$$,
                 '42501', 'permission denied for table agent_messages', 'A cannot rewrite token usage');
select throws_ok($$delete from public.agent_messages where id = 'e0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table agent_messages', 'A cannot delete their messages');
reset role;

-- user B -------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select title from public.agent_conversations order by title$$,
                  array['B conversation'], 'B sees their own conversation, none of A''s');
select is_empty($$select 1 from public.agent_conversations where user_id = 'a0000000-0000-4000-8000-00000000000a'$$,
                'B sees none of A''s conversations');
select results_eq($$select content from public.agent_messages order by created_at, role desc$$,
                  array['B asks', 'B answered'], 'B sees their own messages, none of A''s');
select is_empty($$select 1 from public.agent_messages where user_id = 'a0000000-0000-4000-8000-00000000000a'$$,
                'B sees none of A''s messages');
select throws_ok($$insert into public.agent_messages (conversation_id, user_id, role, content, status)
                   values ('c0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
                           'user', 'injected', 'completed')$$,
                 '42501', 'permission denied for table agent_messages', 'B cannot inject a message into A''s conversation');
select throws_ok($$delete from public.agent_conversations$$,
                 '42501', 'permission denied for table agent_conversations', 'B cannot delete conversations');
select throws_ok($$update public.agent_messages set status = 'cancelled' where id = 'e0000000-0000-4000-8000-0000000000a2'$$,
                 '42501', 'permission denied for table agent_messages', 'B cannot update A''s message');
reset role;

-- admin: no special read access to other users' chats ---------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select is_empty($$select 1 from public.agent_conversations where title in ('A conversation', 'B conversation')$$,
                'an admin does not see users'' conversations');
select is_empty($$select 1 from public.agent_messages where content in ('A asks', 'B asks')$$,
                'an admin does not see users'' messages');
reset role;

-- anon -----------------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select * from public.agent_conversations$$,
                 '42501', 'permission denied for table agent_conversations', 'anon cannot select conversations');
select throws_ok($$insert into public.agent_conversations (deployment_id, user_id)
                   values ('d0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a')$$,
                 '42501', 'permission denied for table agent_conversations', 'anon cannot insert conversations');
select throws_ok($$update public.agent_conversations set title = 'anon'$$,
                 '42501', 'permission denied for table agent_conversations', 'anon cannot update conversations');
select throws_ok($$delete from public.agent_conversations$$,
                 '42501', 'permission denied for table agent_conversations', 'anon cannot delete conversations');
select throws_ok($$select * from public.agent_messages$$,
                 '42501', 'permission denied for table agent_messages', 'anon cannot select messages');
select throws_ok($$insert into public.agent_messages (conversation_id, user_id, role, content, status)
                   values ('c0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
                           'user', 'anon', 'completed')$$,
                 '42501', 'permission denied for table agent_messages', 'anon cannot insert messages');
select throws_ok($$update public.agent_messages set content = 'anon'$$,
                 '42501', 'permission denied for table agent_messages', 'anon cannot update messages');
select throws_ok($$delete from public.agent_messages$$,
                 '42501', 'permission denied for table agent_messages', 'anon cannot delete messages');
reset role;

-- service_role: the worker's and functions' path ----------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select results_eq($$select count(*)::int from public.agent_messages
                     where conversation_id in ('c0000000-0000-4000-8000-0000000000a1', 'c0000000-0000-4000-8000-0000000000b1')$$,
                  array[4], 'service_role sees every message');
select lives_ok($$insert into public.agent_conversations (id, deployment_id, user_id, title) values
                  ('c0000000-0000-4000-8000-0000000000a2', 'd0000000-0000-4000-8000-0000000000a1',
                   'a0000000-0000-4000-8000-00000000000a', 'A second')$$,
                'service_role inserts a conversation');
select lives_ok($$insert into public.agent_messages (id, conversation_id, user_id, role, content, status, reply_to) values
                  ('e0000000-0000-4000-8000-0000000000a3', 'c0000000-0000-4000-8000-0000000000a2',
                   'a0000000-0000-4000-8000-00000000000a', 'user', 'A asks again', 'completed', null),
                  ('e0000000-0000-4000-8000-0000000000a4', 'c0000000-0000-4000-8000-0000000000a2',
                   'a0000000-0000-4000-8000-00000000000a', 'assistant', '', 'queued',
                   'e0000000-0000-4000-8000-0000000000a3')$$,
                'service_role inserts a user message and its queued reply');
select lives_ok($$update public.agent_messages set status = 'completed', content = 'done', completed_at = now()
                   where id = 'e0000000-0000-4000-8000-0000000000a4'$$,
                'service_role (the worker) completes a reply');
select lives_ok($$delete from public.agent_conversations where id = 'c0000000-0000-4000-8000-0000000000b1'$$,
                'service_role deletes a conversation (messages cascade)');
select throws_ok($$insert into public.agent_conversations (deployment_id, user_id) values
                   ('d0000000-0000-4000-8000-0000000000b1', 'a0000000-0000-4000-8000-00000000000a')$$,
                 '23503', null, 'a conversation cannot point at another user''s deployment, even for the service');
reset role;

-- A sees what the service wrote for them ------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';
select results_eq($$select content, status from public.agent_messages
                     where conversation_id = 'c0000000-0000-4000-8000-0000000000a2' order by created_at, role desc$$,
                  $$values ('A asks again'::text, 'completed'::text), ('done', 'completed')$$,
                  'A reads the messages the worker wrote');
reset role;

-- read back as postgres -------------------------------------------------------------------------------------
select results_eq($$select content from public.agent_messages
                     where id in ('e0000000-0000-4000-8000-0000000000a1', 'e0000000-0000-4000-8000-0000000000a2')
                     order by content$$,
                  array['A answered', 'A asks'], 'A''s messages are unchanged after the denied writes');
select is((select title from public.agent_conversations where id = 'c0000000-0000-4000-8000-0000000000a1'),
          'A conversation', 'A''s conversation is unchanged after the denied writes');
select is((select count(*)::int from public.agent_messages where content in ('direct', 'injected', 'anon')),
          0, 'no message was inserted by a client');

select * from finish();
rollback;
