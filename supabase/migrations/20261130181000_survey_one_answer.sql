-- Survey answers: one per user and deployment, plus one "general" answer (deployment_id null) per
-- user; answering again changes the answer (POST /api/marketplace/survey, or a client's upsert on
-- (user_id, deployment_id) through PostgREST).
--
--   * updated_at: when the answer last changed (the trigger stamps it; clients cannot set it).
--     Existing rows take their created_at.
--   * Duplicates already stored are folded into the newest answer of each (user, deployment).
--   * A unique index with NULLS NOT DISTINCT (PostgreSQL 15) makes the null deployment one key,
--     so ON CONFLICT (user_id, deployment_id) finds a user's general answer too.
--   * Owners may change the scores and the comment of their own answers (never user_id,
--     deployment_id or the timestamps); still no DELETE.
--   * deployment_id now cascades instead of going null: an answer about a deployment that is
--     hard-deleted would otherwise collide with the user's general answer (and a user who had both
--     could not be deleted, as the deployment's cascade runs before the answers'). Deployments are
--     soft-deleted in normal use (deleted_at), which keeps their answers.

alter table public.survey_responses add column updated_at timestamptz;
update public.survey_responses set updated_at = created_at;
alter table public.survey_responses
  alter column updated_at set default now(),
  alter column updated_at set not null;

delete from public.survey_responses s
 using (select id,
               row_number() over (partition by user_id, deployment_id
                                  order by created_at desc, id desc) as n
          from public.survey_responses) ranked
 where s.id = ranked.id and ranked.n > 1;

create unique index survey_responses_one_per_user_deployment
  on public.survey_responses (user_id, deployment_id) nulls not distinct;

create trigger survey_responses_set_updated_at
  before update on public.survey_responses
  for each row execute function private.set_updated_at();

grant update (satisfaction, ease_of_use, likelihood_to_recommend, comment)
  on table public.survey_responses to authenticated;

create policy "owners change their survey answers"
  on public.survey_responses
  for update
  to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

alter table public.survey_responses
  drop constraint survey_responses_deployment_id_fkey,
  add constraint survey_responses_deployment_id_fkey
    foreign key (deployment_id) references public.agent_deployments (id) on delete cascade;
