-- public.survey_responses, one answer each (20261130181000_survey_one_answer.sql): one answer per
-- user and deployment and one general answer (deployment_id null) per user; answering again through
-- ON CONFLICT (user_id, deployment_id) changes the scores and comment only, keeps the id and
-- created_at and stamps updated_at; nobody changes another user's answer; a hard-deleted deployment
-- takes its answers along, so deleting a user with both kinds of answer works.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(20);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-published', 'pgTAP published', 'testing', 'chat', 'free', true);
insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A live'),
  ('d0000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000001', 'B live');
-- A's general answer, given long ago.
insert into public.survey_responses (id, user_id, deployment_id, satisfaction, ease_of_use,
                                     likelihood_to_recommend, comment, created_at, updated_at)
values ('50000000-0000-4000-8000-0000000000a0', 'a0000000-0000-4000-8000-00000000000a', null,
        2, 2, 2, 'first thoughts', '2026-01-01', '2026-01-01'),
       ('50000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
        'd0000000-0000-4000-8000-0000000000b1', 3, 3, 3, 'B about B live', '2026-01-01', '2026-01-01');

-- structure ------------------------------------------------------------------------------------------
select ok((select indisunique and indnullsnotdistinct from pg_index
            where indexrelid = 'public.survey_responses_one_per_user_deployment'::regclass),
          'one answer per (user_id, deployment_id), nulls not distinct');
select results_eq($$
  select a.attname::text collate "default" from pg_attribute a
   where a.attrelid = 'public.survey_responses'::regclass and a.attnum > 0 and not a.attisdropped
     and has_column_privilege('authenticated', a.attrelid, a.attnum, 'UPDATE')
   order by a.attnum
$$, array['satisfaction', 'ease_of_use', 'likelihood_to_recommend', 'comment'],
  'authenticated may update exactly the scores and the comment');
select policy_cmd_is('public', 'survey_responses', 'owners change their survey answers', 'UPDATE',
                     '"owners change their survey answers" is an UPDATE policy');
select policy_roles_are('public', 'survey_responses', 'owners change their survey answers',
                        array['authenticated'], '"owners change their survey answers" applies to authenticated');
select has_trigger('public', 'survey_responses', 'survey_responses_set_updated_at',
                   'survey_responses stamps updated_at');
select col_not_null('public', 'survey_responses', 'updated_at', 'updated_at is not null');

-- user A ---------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend)
                   values (4, 4, 9)$$,
                 '23505', null, 'a second plain insert of a general answer is refused');
select lives_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend, comment)
                  values (5, 4, 9, 'second thoughts')
                  on conflict (user_id, deployment_id) do update
                     set satisfaction = excluded.satisfaction, ease_of_use = excluded.ease_of_use,
                         likelihood_to_recommend = excluded.likelihood_to_recommend,
                         comment = excluded.comment$$,
                'answering again through ON CONFLICT changes the general answer');
select lives_ok($$insert into public.survey_responses (deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                  values ('d0000000-0000-4000-8000-0000000000a1', 1, 1, 0)$$,
                'A answers about their deployment besides the general answer');
select throws_ok($$insert into public.survey_responses (deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('d0000000-0000-4000-8000-0000000000a1', 2, 2, 2)$$,
                 '23505', null, 'a second plain insert about the same deployment is refused');
select throws_ok($$update public.survey_responses set updated_at = '1999-01-01'$$,
                 '42501', 'permission denied for table survey_responses', 'A cannot set updated_at');
select throws_ok($$update public.survey_responses set user_id = 'b0000000-0000-4000-8000-00000000000b'$$,
                 '42501', 'permission denied for table survey_responses', 'A cannot give an answer to B');
select is_empty($$update public.survey_responses set comment = 'hijacked'
                   where id = '50000000-0000-4000-8000-0000000000b1' returning id$$,
                'A cannot change B''s answer (no row matches)');
select throws_ok($$insert into public.survey_responses (deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('d0000000-0000-4000-8000-0000000000b1', 1, 1, 1)
                   on conflict (user_id, deployment_id) do update set comment = 'hijacked'$$,
                 '42501', 'new row violates row-level security policy for table "survey_responses"',
                 'A cannot answer about B''s deployment through an upsert either');
reset role;

select results_eq($$select id, satisfaction::int, comment, created_at = '2026-01-01'::timestamptz,
                           updated_at > created_at
                      from public.survey_responses
                     where user_id = 'a0000000-0000-4000-8000-00000000000a' and deployment_id is null$$,
                  $$values ('50000000-0000-4000-8000-0000000000a0'::uuid, 5, 'second thoughts', true, true)$$,
                  'the general answer kept its id and created_at, took the new scores and a new updated_at');
select is((select count(*)::int from public.survey_responses where user_id = 'a0000000-0000-4000-8000-00000000000a'),
          2, 'A has exactly two answers');
select is((select comment from public.survey_responses where id = '50000000-0000-4000-8000-0000000000b1'),
          'B about B live', 'B''s answer is unchanged');
select is((select updated_at from public.survey_responses
            where user_id = 'a0000000-0000-4000-8000-00000000000a'
              and deployment_id = 'd0000000-0000-4000-8000-0000000000a1'),
          now(), 'a new answer''s updated_at is its creation time');

-- deletes ----------------------------------------------------------------------------------------------
delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000b1';
select is_empty($$select 1 from public.survey_responses where id = '50000000-0000-4000-8000-0000000000b1'$$,
                'a hard-deleted deployment takes its answers along');
delete from auth.users where id = 'a0000000-0000-4000-8000-00000000000a';
select is_empty($$select 1 from public.survey_responses where user_id = 'a0000000-0000-4000-8000-00000000000a'$$,
                'a user with a general answer and a deployment answer can be deleted');

select * from finish();
rollback;
