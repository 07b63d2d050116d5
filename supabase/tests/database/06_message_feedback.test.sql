-- public.message_feedback: a user rates their own assistant replies (insert under RLS WITH CHECK),
-- reads, changes (rating and comment only) and withdraws their own feedback; sees nobody else's.
-- anon has no grant. Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(41);

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
insert into public.agent_conversations (id, deployment_id, user_id) values
  ('c0000000-0000-4000-8000-0000000000a1', 'd0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a'),
  ('c0000000-0000-4000-8000-0000000000b1', 'd0000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b');
insert into public.agent_messages (id, conversation_id, user_id, role, content, status, reply_to, completed_at) values
  -- A: a user message and two assistant replies
  ('e0000000-0000-4000-8000-0000000000a1', 'c0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'A asks', 'completed', null, null),
  ('e0000000-0000-4000-8000-0000000000a2', 'c0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'A answered', 'completed',
   'e0000000-0000-4000-8000-0000000000a1', now()),
  ('e0000000-0000-4000-8000-0000000000a3', 'c0000000-0000-4000-8000-0000000000a1',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'A answered again', 'completed',
   'e0000000-0000-4000-8000-0000000000a1', now()),
  -- B: a user message and an assistant reply
  ('e0000000-0000-4000-8000-0000000000b1', 'c0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-00000000000b', 'user', 'B asks', 'completed', null, null),
  ('e0000000-0000-4000-8000-0000000000b2', 'c0000000-0000-4000-8000-0000000000b1',
   'b0000000-0000-4000-8000-00000000000b', 'assistant', 'B answered', 'completed',
   'e0000000-0000-4000-8000-0000000000b1', now());
-- B's own feedback on B's reply, the target of A's attempts below.
insert into public.message_feedback (id, message_id, user_id, rating, comment, updated_at) values
  ('f0000000-0000-4000-8000-0000000000b1', 'e0000000-0000-4000-8000-0000000000b2',
   'b0000000-0000-4000-8000-00000000000b', 'like', 'B comment', '2000-01-01');

-- user A: insert ---------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select throws_ok($$insert into public.message_feedback (id, message_id, rating, comment) values
                   ('f0000000-0000-4000-8000-0000000000a1', 'e0000000-0000-4000-8000-0000000000a2', 'like', 'nice')$$,
                 '42501', 'permission denied for table message_feedback',
                 'A cannot choose the id of their feedback (no INSERT on column id)');
select throws_ok($$insert into public.message_feedback (message_id, rating, created_at) values
                   ('e0000000-0000-4000-8000-0000000000a2', 'like', '1999-01-01')$$,
                 '42501', 'permission denied for table message_feedback',
                 'A cannot backdate created_at on insert');
select throws_ok($$insert into public.message_feedback (message_id, rating, updated_at) values
                   ('e0000000-0000-4000-8000-0000000000a2', 'like', '1999-01-01')$$,
                 '42501', 'permission denied for table message_feedback',
                 'A cannot set updated_at on insert');
select lives_ok($$insert into public.message_feedback (message_id, rating, comment) values
                  ('e0000000-0000-4000-8000-0000000000a2', 'like', 'nice')$$,
                'A rates their own assistant reply (id, user_id and timestamps take their defaults)');
reset role;
-- A fixed id for the assertions below (as postgres: clients cannot choose it).
update public.message_feedback set id = 'f0000000-0000-4000-8000-0000000000a1'
 where message_id = 'e0000000-0000-4000-8000-0000000000a2' and user_id = 'a0000000-0000-4000-8000-00000000000a';
select ok((select created_at > '2020-01-01' and updated_at > '2020-01-01' from public.message_feedback
            where id = 'f0000000-0000-4000-8000-0000000000a1'),
          'the feedback''s timestamps are the database''s');
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';
select lives_ok($$insert into public.message_feedback (message_id, user_id, rating) values
                  ('e0000000-0000-4000-8000-0000000000a3', 'a0000000-0000-4000-8000-00000000000a', 'dislike')$$,
                'A rates another own reply with an explicit user_id = A');
select throws_ok($$insert into public.message_feedback (message_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000b2', 'dislike')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'A cannot rate B''s assistant reply');
select throws_ok($$insert into public.message_feedback (message_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000a1', 'like')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'A cannot rate a user-role message, not even their own');
select throws_ok($$insert into public.message_feedback (message_id, user_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000b2', 'b0000000-0000-4000-8000-00000000000b', 'dislike')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'A cannot insert feedback as B (user_id = B) on B''s reply');
select throws_ok($$insert into public.message_feedback (message_id, user_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000a2', 'b0000000-0000-4000-8000-00000000000b', 'dislike')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'A cannot insert feedback as B (user_id = B) on A''s own reply');
select throws_ok($$insert into public.message_feedback (message_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000a2', 'dislike')$$,
                 '23505', null, 'one feedback per user and message');
select throws_ok($$insert into public.message_feedback (message_id, rating) values
                   ('e0000000-0000-4000-8000-000000000099', 'like')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'A cannot rate a message that does not exist');

-- user A: read ---------------------------------------------------------------------------------------------
select results_eq($$select message_id, rating, comment from public.message_feedback order by rating desc$$,
                  $$values ('e0000000-0000-4000-8000-0000000000a2'::uuid, 'like'::text, 'nice'::text),
                           ('e0000000-0000-4000-8000-0000000000a3', 'dislike', null)$$,
                  'A reads exactly their own feedback');
select is_empty($$select 1 from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000b1'$$,
                'A cannot read B''s feedback');

-- user A: update ---------------------------------------------------------------------------------------------
select results_eq($$with u as (update public.message_feedback set rating = 'dislike', comment = 'changed my mind'
                                 where id = 'f0000000-0000-4000-8000-0000000000a1' returning 1)
                    select count(*)::int from u$$,
                  array[1], 'A updates the rating and comment of their own feedback (1 row)');
select results_eq($$with u as (update public.message_feedback set rating = 'dislike', comment = 'hijacked'
                                 where id = 'f0000000-0000-4000-8000-0000000000b1' returning 1)
                    select count(*)::int from u$$,
                  array[0], 'A''s update of B''s feedback affects 0 rows');
select results_eq($$with u as (update public.message_feedback set comment = 'hijacked all' returning 1)
                    select count(*)::int from u$$,
                  array[2], 'an unfiltered update by A touches only A''s 2 rows');
select throws_ok($$update public.message_feedback set user_id = 'b0000000-0000-4000-8000-00000000000b'
                    where id = 'f0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table message_feedback',
                 'A cannot update user_id (column grant is rating, comment only)');
select throws_ok($$update public.message_feedback set message_id = 'e0000000-0000-4000-8000-0000000000b2'
                    where id = 'f0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table message_feedback',
                 'A cannot move their feedback to another message');
select throws_ok($$update public.message_feedback set created_at = '2000-01-01'
                    where id = 'f0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table message_feedback', 'A cannot backdate their feedback');
select throws_ok($$update public.message_feedback set rating = 'meh'
                    where id = 'f0000000-0000-4000-8000-0000000000a1'$$,
                 '23514', null, 'rating must be like or dislike');
reset role;

select results_eq($$select rating, comment, updated_at from public.message_feedback
                     where id = 'f0000000-0000-4000-8000-0000000000b1'$$,
                  $$values ('like'::text, 'B comment'::text, '2000-01-01'::timestamptz)$$,
                  'B''s feedback is unchanged after A''s update attempts (read as postgres)');
select results_eq($$select rating, comment, user_id, message_id from public.message_feedback
                     where id = 'f0000000-0000-4000-8000-0000000000a1'$$,
                  $$values ('dislike'::text, 'hijacked all'::text, 'a0000000-0000-4000-8000-00000000000a'::uuid,
                            'e0000000-0000-4000-8000-0000000000a2'::uuid)$$,
                  'A''s feedback holds A''s update and still belongs to A and A''s message');

-- user B ---------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {}}';
select results_eq($$select id from public.message_feedback$$,
                  $$values ('f0000000-0000-4000-8000-0000000000b1'::uuid)$$,
                  'B sees only their own feedback, none of A''s');
select is_empty($$select 1 from public.message_feedback where user_id = 'a0000000-0000-4000-8000-00000000000a'$$,
                'B does not see A''s feedback');
select throws_ok($$insert into public.message_feedback (message_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000a2', 'dislike')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'B cannot rate A''s assistant reply');
select results_eq($$with u as (update public.message_feedback set comment = 'B edits own'
                                 where id = 'f0000000-0000-4000-8000-0000000000b1' returning 1)
                    select count(*)::int from u$$,
                  array[1], 'B updates their own feedback');
reset role;

-- user A: delete -------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';
select results_eq($$with d as (delete from public.message_feedback
                                 where id = 'f0000000-0000-4000-8000-0000000000b1' returning 1)
                    select count(*)::int from d$$,
                  array[0], 'A''s delete of B''s feedback affects 0 rows');
select results_eq($$with d as (delete from public.message_feedback
                                 where id = 'f0000000-0000-4000-8000-0000000000a1' returning 1)
                    select count(*)::int from d$$,
                  array[1], 'A withdraws their own feedback (1 row)');
reset role;

select ok(exists (select 1 from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000b1'),
          'B''s feedback still exists after A''s delete attempt (read as postgres)');
select ok(not exists (select 1 from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000a1'),
          'A''s withdrawn feedback is gone (read as postgres)');
select is((select comment from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000b1'),
          'B edits own', 'B''s own edit went through');

-- updated_at moves when the owner updates (the trigger fires under the authenticated role) ------------------
select ok((select updated_at = now() from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000b1'),
          'updated_at was refreshed by B''s update');

-- an admin has no direct read access to users' feedback (analytics functions aggregate it) ---------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select is_empty($$select 1 from public.message_feedback where user_id in
                    ('a0000000-0000-4000-8000-00000000000a', 'b0000000-0000-4000-8000-00000000000b')$$,
                'an admin does not see users'' feedback rows');
select throws_ok($$insert into public.message_feedback (message_id, user_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000a3', 'c0000000-0000-4000-8000-00000000000c', 'like')$$,
                 '42501', 'new row violates row-level security policy for table "message_feedback"',
                 'an admin cannot rate someone else''s reply');
reset role;

-- anon -----------------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select * from public.message_feedback$$,
                 '42501', 'permission denied for table message_feedback', 'anon cannot select feedback');
select throws_ok($$insert into public.message_feedback (message_id, user_id, rating) values
                   ('e0000000-0000-4000-8000-0000000000a2', 'a0000000-0000-4000-8000-00000000000a', 'like')$$,
                 '42501', 'permission denied for table message_feedback', 'anon cannot insert feedback');
select throws_ok($$update public.message_feedback set rating = 'dislike'$$,
                 '42501', 'permission denied for table message_feedback', 'anon cannot update feedback');
select throws_ok($$delete from public.message_feedback$$,
                 '42501', 'permission denied for table message_feedback', 'anon cannot delete feedback');
reset role;

-- service_role -----------------------------------------------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select results_eq($$select count(*)::int from public.message_feedback where user_id in
                     ('a0000000-0000-4000-8000-00000000000a', 'b0000000-0000-4000-8000-00000000000b')$$,
                  array[2], 'service_role sees everyone''s feedback');
select lives_ok($$delete from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000b1'$$,
                'service_role deletes feedback');
reset role;

select * from finish();
rollback;
