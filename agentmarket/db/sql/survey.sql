-- The satisfaction survey (agentmarket.services.survey), run as the caller under RLS: a user
-- answers about the marketplace or one of their own deployments, once each (a new answer
-- replaces the old one: supabase/migrations/20261130181000_survey_one_answer.sql).

-- name: survey_deployment
-- The caller's live deployment the answer is about (no row: not theirs, deleted or unknown).
select id, agent_id from public.agent_deployments where id = %(deployment_id)s;

-- name: survey_upsert
-- Store the caller's answer about this deployment (null: the marketplace in general), replacing
-- an earlier one; `created` is false when it replaced one.
insert into public.survey_responses
       (user_id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend, comment)
values ((select auth.uid()), %(deployment_id)s, %(satisfaction)s, %(ease_of_use)s,
        %(likelihood_to_recommend)s, %(comment)s)
on conflict (user_id, deployment_id) do update
   set satisfaction = excluded.satisfaction,
       ease_of_use = excluded.ease_of_use,
       likelihood_to_recommend = excluded.likelihood_to_recommend,
       comment = excluded.comment
returning id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend, comment,
          created_at, updated_at, (xmax = 0) as created;

-- name: survey_status
-- When the caller last answered (null: never) and whether any reply to them has completed.
select (select max(s.updated_at)
          from public.survey_responses s
         where s.user_id = (select auth.uid())) as answered_at,
       exists (select 1
                 from public.agent_messages m
                where m.user_id = (select auth.uid())
                  and m.role = 'assistant'
                  and m.status = 'completed') as has_completed_reply;
