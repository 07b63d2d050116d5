-- What users tell us (per-message feedback, satisfaction survey) and what we measure (telemetry).
-- Feedback and survey rows are plain facts guarded by check constraints and RLS, so clients may
-- insert them directly; admins read them in aggregate through the analytics functions.

create table public.message_feedback (
  id uuid primary key default gen_random_uuid(),
  message_id uuid not null references public.agent_messages (id) on delete cascade,
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  rating text not null
    constraint message_feedback_rating check (rating in ('like', 'dislike')),
  comment text
    constraint message_feedback_comment_length check (length(comment) <= 2000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint message_feedback_one_per_user unique (message_id, user_id)
);

create index message_feedback_user_idx on public.message_feedback (user_id);
create index message_feedback_created_idx on public.message_feedback (created_at);

create trigger message_feedback_set_updated_at
  before update on public.message_feedback
  for each row execute function private.set_updated_at();

alter table public.message_feedback enable row level security;

revoke all on table public.message_feedback from public, anon, authenticated;
grant select, insert, delete on table public.message_feedback to authenticated;
grant update (rating, comment) on table public.message_feedback to authenticated;
grant all on table public.message_feedback to service_role;

create policy "owners read their feedback"
  on public.message_feedback
  for select
  to authenticated
  using (user_id = (select auth.uid()));

-- Only on an assistant reply the user can see, i.e. their own.
create policy "owners rate their assistant replies"
  on public.message_feedback
  for insert
  to authenticated
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.agent_messages m
       where m.id = message_id and m.user_id = (select auth.uid()) and m.role = 'assistant'
    )
  );

create policy "owners change their feedback"
  on public.message_feedback
  for update
  to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

create policy "owners withdraw their feedback"
  on public.message_feedback
  for delete
  to authenticated
  using (user_id = (select auth.uid()));

create table public.survey_responses (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  deployment_id uuid references public.agent_deployments (id) on delete set null,
  satisfaction smallint not null
    constraint survey_responses_satisfaction_range check (satisfaction between 1 and 5),
  ease_of_use smallint not null
    constraint survey_responses_ease_of_use_range check (ease_of_use between 1 and 5),
  likelihood_to_recommend smallint not null
    constraint survey_responses_recommend_range check (likelihood_to_recommend between 0 and 10),
  comment text
    constraint survey_responses_comment_length check (length(comment) <= 2000),
  created_at timestamptz not null default now()
);

create index survey_responses_user_idx on public.survey_responses (user_id);
create index survey_responses_deployment_idx on public.survey_responses (deployment_id);
create index survey_responses_created_idx on public.survey_responses (created_at);

alter table public.survey_responses enable row level security;

revoke all on table public.survey_responses from public, anon, authenticated;
grant select, insert on table public.survey_responses to authenticated;
grant all on table public.survey_responses to service_role;

create policy "owners read their survey answers"
  on public.survey_responses
  for select
  to authenticated
  using (user_id = (select auth.uid()));

-- About one of their own deployments, or about the marketplace in general.
create policy "owners answer the survey"
  on public.survey_responses
  for insert
  to authenticated
  with check (
    user_id = (select auth.uid())
    and (
      deployment_id is null
      or exists (
        select 1 from public.agent_deployments d
         where d.id = deployment_id and d.user_id = (select auth.uid())
      )
    )
  );

-- Telemetry events (marketplace.agent.viewed, agent.chat.error, ...). Written by the service,
-- read by admin analytics; never exposed.
create table private.telemetry_events (
  id bigint generated always as identity primary key,
  name text not null
    constraint telemetry_events_name_format check (name ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
  user_id uuid,
  agent_id uuid,
  deployment_id uuid,
  properties jsonb not null default '{}'::jsonb
    constraint telemetry_events_properties_object check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now()
);

create index telemetry_events_name_created_idx on private.telemetry_events (name, created_at);
create index telemetry_events_created_idx on private.telemetry_events using brin (created_at);
create index telemetry_events_agent_idx on private.telemetry_events (agent_id, created_at);
create index telemetry_events_user_idx on private.telemetry_events (user_id);
create index telemetry_events_deployment_idx on private.telemetry_events (deployment_id);

alter table private.telemetry_events enable row level security;
revoke all on table private.telemetry_events from public, anon, authenticated;
grant all on table private.telemetry_events to service_role;
