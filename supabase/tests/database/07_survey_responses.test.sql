-- public.survey_responses: a user answers about the marketplace (deployment_id null) or one of their own
-- deployments, reads their own answers, changes only their scores and comment (19_survey.test.sql),
-- never deletes them; check constraints bound every score; anon has no grant. Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(34);

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
insert into public.survey_responses (id, user_id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend, comment)
values ('50000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
        'd0000000-0000-4000-8000-0000000000b1', 2, 2, 3, 'B private opinion');

-- user A: inserts ----------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select lives_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend, comment)
                  values (5, 4, 10, 'A about the marketplace')$$,
                'A answers about the marketplace (deployment_id null, user_id defaults to auth.uid())');
select lives_ok($$insert into public.survey_responses (user_id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                  values ('a0000000-0000-4000-8000-00000000000a', 'd0000000-0000-4000-8000-0000000000a1', 1, 1, 0)$$,
                'A answers about their own deployment (lowest valid scores)');
select throws_ok($$insert into public.survey_responses (id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('50000000-0000-4000-8000-0000000000a9', 3, 3, 5)$$,
                 '42501', 'permission denied for table survey_responses',
                 'A cannot choose the id of an answer (no INSERT on column id)');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend, created_at)
                   values (3, 3, 5, '1999-01-01')$$,
                 '42501', 'permission denied for table survey_responses',
                 'A cannot backdate created_at on insert');
select throws_ok($$insert into public.survey_responses (deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('d0000000-0000-4000-8000-0000000000b1', 3, 3, 5)$$,
                 '42501', 'new row violates row-level security policy for table "survey_responses"',
                 'A cannot answer about B''s deployment');
select throws_ok($$insert into public.survey_responses (user_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('b0000000-0000-4000-8000-00000000000b', 1, 1, 0)$$,
                 '42501', 'new row violates row-level security policy for table "survey_responses"',
                 'A cannot answer as B (user_id mismatch)');
select throws_ok($$insert into public.survey_responses (user_id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('b0000000-0000-4000-8000-00000000000b', 'd0000000-0000-4000-8000-0000000000b1', 1, 1, 0)$$,
                 '42501', 'new row violates row-level security policy for table "survey_responses"',
                 'A cannot answer as B about B''s deployment');
select throws_ok($$insert into public.survey_responses (user_id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('b0000000-0000-4000-8000-00000000000b', 'd0000000-0000-4000-8000-0000000000a1', 1, 1, 0)$$,
                 '42501', 'new row violates row-level security policy for table "survey_responses"',
                 'A cannot answer as B about A''s deployment');
select throws_ok($$insert into public.survey_responses (deployment_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('d0000000-0000-4000-8000-000000000099', 3, 3, 5)$$,
                 '42501', 'new row violates row-level security policy for table "survey_responses"',
                 'A cannot answer about a deployment that does not exist');

-- check constraints (rows that pass RLS, so the constraint is what rejects them) ---------------------------
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend) values (0, 3, 5)$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_satisfaction_range"',
                 'satisfaction 0 is rejected');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend) values (6, 3, 5)$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_satisfaction_range"',
                 'satisfaction 6 is rejected');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend) values (3, 0, 5)$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_ease_of_use_range"',
                 'ease_of_use 0 is rejected');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend) values (3, 6, 5)$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_ease_of_use_range"',
                 'ease_of_use 6 is rejected');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend) values (3, 3, 11)$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_recommend_range"',
                 'likelihood_to_recommend 11 is rejected');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend) values (3, 3, -1)$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_recommend_range"',
                 'likelihood_to_recommend -1 is rejected');
select throws_ok($$insert into public.survey_responses (satisfaction, ease_of_use, likelihood_to_recommend, comment)
                   values (3, 3, 5, repeat('x', 2001))$$,
                 '23514', 'new row for relation "survey_responses" violates check constraint "survey_responses_comment_length"',
                 'a comment over 2000 characters is rejected');

-- user A: reads, no moves, no delete ---------------------------------------------------------------------
select results_eq($$select satisfaction::int, ease_of_use::int, likelihood_to_recommend::int, deployment_id
                     from public.survey_responses
                     order by satisfaction$$,
                  $$values (1, 1, 0, 'd0000000-0000-4000-8000-0000000000a1'::uuid),
                           (5, 4, 10, null)$$,
                  'A reads exactly their own two answers');
select is_empty($$select 1 from public.survey_responses where id = '50000000-0000-4000-8000-0000000000b1'$$,
                'A cannot read B''s answer');
select throws_ok($$update public.survey_responses set deployment_id = null$$,
                 '42501', 'permission denied for table survey_responses',
                 'A cannot move their answers (no UPDATE on deployment_id; scores: 19_survey.test.sql)');
select throws_ok($$delete from public.survey_responses$$,
                 '42501', 'permission denied for table survey_responses', 'A cannot delete their answers');
reset role;

-- user B ---------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {}}';
select results_eq($$select comment from public.survey_responses$$,
                  array['B private opinion'], 'B reads only their own answer');
select is_empty($$select 1 from public.survey_responses where user_id = 'a0000000-0000-4000-8000-00000000000a'$$,
                'B cannot read A''s answers');
select throws_ok($$update public.survey_responses set created_at = '1999-01-01' where id = '50000000-0000-4000-8000-0000000000b1'$$,
                 '42501', 'permission denied for table survey_responses', 'B cannot backdate their answer');
select throws_ok($$delete from public.survey_responses where user_id = 'a0000000-0000-4000-8000-00000000000a'$$,
                 '42501', 'permission denied for table survey_responses', 'B cannot delete A''s answers');
reset role;

-- admin: reads aggregates through analytics functions, not rows --------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select is_empty($$select 1 from public.survey_responses where user_id in
                    ('a0000000-0000-4000-8000-00000000000a', 'b0000000-0000-4000-8000-00000000000b')$$,
                'an admin does not see users'' answers');
select throws_ok($$delete from public.survey_responses$$,
                 '42501', 'permission denied for table survey_responses', 'an admin cannot delete answers');
reset role;

-- anon -----------------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select * from public.survey_responses$$,
                 '42501', 'permission denied for table survey_responses', 'anon cannot select answers');
select throws_ok($$insert into public.survey_responses (user_id, satisfaction, ease_of_use, likelihood_to_recommend)
                   values ('a0000000-0000-4000-8000-00000000000a', 5, 5, 10)$$,
                 '42501', 'permission denied for table survey_responses', 'anon cannot insert answers');
select throws_ok($$update public.survey_responses set satisfaction = 1$$,
                 '42501', 'permission denied for table survey_responses', 'anon cannot update answers');
select throws_ok($$delete from public.survey_responses$$,
                 '42501', 'permission denied for table survey_responses', 'anon cannot delete answers');
reset role;

-- read back as postgres ---------------------------------------------------------------------------------
select results_eq($$select user_id, count(*)::int from public.survey_responses
                     where user_id in ('a0000000-0000-4000-8000-00000000000a', 'b0000000-0000-4000-8000-00000000000b')
                     group by user_id order by user_id$$,
                  $$values ('a0000000-0000-4000-8000-00000000000a'::uuid, 2), ('b0000000-0000-4000-8000-00000000000b', 1)$$,
                  'exactly the allowed answers were stored');
select is((select satisfaction::int from public.survey_responses where id = '50000000-0000-4000-8000-0000000000b1'),
          2, 'B''s answer is unchanged');
select ok((select bool_and(created_at > '2020-01-01') from public.survey_responses
            where user_id = 'a0000000-0000-4000-8000-00000000000a'),
          'A''s answers carry the database''s created_at');

-- the service may clean up ---------------------------------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select lives_ok($$delete from public.survey_responses where id = '50000000-0000-4000-8000-0000000000b1'$$,
                'service_role deletes an answer');
reset role;

select * from finish();
rollback;
