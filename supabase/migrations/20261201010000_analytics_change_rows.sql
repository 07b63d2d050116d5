-- The admin analytics' shared counters without hot rows (docs/architecture.md#admin-analytics,
-- docs/operations.md#analytics).
--
-- 1. The hourly rollup (20261130180100): every user message, conversation and deployment of an
--    agent updated that agent's row for the hour, so every send to a popular agent queued on one
--    row lock until the sender's commit (its WAL flush, and the NOTIFY lock every send takes).
--    Now each inserts a change row into private.analytics_hourly_changes; the rollup's table is
--    private.analytics_hourly_cells and private.analytics_hourly is a view: the cells' rows and
--    the changes' rows, which every reader sums by its keys.
--
-- 2. The reply cells (20261130190100): every finished reply was added to two cells in its own
--    transaction, its UTC hour for all agents and its agent's UTC day. Every reply of an hour
--    rewrote the same hour row (and every reply of an agent the same day row), each ~3 kB with its
--    two histograms, and held it locked until its commit: about 1.3–1.8 ms of Postgres CPU per
--    message in `agentmarket bench chat`, and a queue of finishes on one row (docs/benchmarks.md).
--    Now a finish (or a refused send, or their removal) inserts one narrow row into
--    private.analytics_reply_changes; the cells are private.analytics_reply_hour_cells and
--    private.analytics_reply_day_cells, and private.analytics_reply_hours and
--    private.analytics_reply_days are views: the cells' rows and the changes' not folded yet.
--
-- private.analytics_fold() moves every change into its cells (the worker runs it on its gauges'
-- timer, every few seconds), so every report stays exact whenever the fold last ran.
-- tests/integration/test_analytics_rollups.py and test_analytics_histograms.py prove views ==
-- recount before and after a fold, and cells alone == recount right after one.

alter table private.analytics_hourly rename to analytics_hourly_cells;
alter index private.analytics_hourly_pkey rename to analytics_hourly_cells_pkey;

-- A deployment, conversation or user message added to (or, negative, taken out of) its agent's
-- hour, waiting to be folded into analytics_hourly_cells. Insert-only: no index, no key.
create table private.analytics_hourly_changes (
  hour timestamptz not null,
  agent_id uuid not null,
  deployments integer not null default 0,
  conversations integer not null default 0,
  user_messages integer not null default 0
);

alter table private.analytics_hourly_changes enable row level security;
revoke all on table private.analytics_hourly_changes from public, anon, authenticated;
grant all on table private.analytics_hourly_changes to service_role;

-- What the reports read: the cells and the changes not folded yet, as rows to sum (every reader
-- sums by its keys; a view that summed first would make every report aggregate every cell twice).
create view private.analytics_hourly with (security_invoker = true) as
select c.hour, c.agent_id, c.deployments, c.conversations, c.user_messages
  from private.analytics_hourly_cells c
union all
select d.hour, d.agent_id, d.deployments, d.conversations, d.user_messages
  from private.analytics_hourly_changes d;

revoke all on table private.analytics_hourly from public, anon, authenticated;
grant select on table private.analytics_hourly to service_role;

-- Every send, conversation and deployment: one change row (no row of the rollup is updated).
create or replace function private.analytics_add_hourly(
  p_at timestamptz, p_agent uuid, p_deployments integer, p_conversations integer,
  p_user_messages integer
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  insert into private.analytics_hourly_changes
         (hour, agent_id, deployments, conversations, user_messages)
  values (date_trunc('hour', p_at, 'UTC'), p_agent, p_deployments, p_conversations,
          p_user_messages);
end
$$;

-- The rebuild of the rollups (20261130190000) with the hourly rollup's new tables.
create or replace function private.analytics_rebuild_base()
returns void
language plpgsql
set search_path = ''
as $$
begin
  lock table public.agent_deployments, public.agent_conversations, public.agent_messages,
             public.message_feedback, private.chat_jobs in share mode;
  truncate private.analytics_hourly_cells, private.analytics_hourly_changes,
           private.analytics_user_hours, private.analytics_replies,
           private.analytics_feedback, private.analytics_conversation_agents;
  insert into private.analytics_conversation_agents (conversation_id, agent_id)
  select c.id, d.agent_id
    from public.agent_conversations c join public.agent_deployments d on d.id = c.deployment_id;
  insert into private.analytics_hourly_cells (hour, agent_id, deployments, conversations, user_messages)
  select hour, agent_id, sum(deployments), sum(conversations), sum(user_messages)
    from (
      select date_trunc('hour', d.created_at, 'UTC') as hour, d.agent_id,
             count(*) as deployments, 0 as conversations, 0 as user_messages
        from public.agent_deployments d group by 1, 2
      union all
      select date_trunc('hour', c.created_at, 'UTC'), ca.agent_id, 0, count(*), 0
        from public.agent_conversations c
        join private.analytics_conversation_agents ca on ca.conversation_id = c.id
       group by 1, 2
      union all
      select date_trunc('hour', m.created_at, 'UTC'), ca.agent_id, 0, 0, count(*)
        from public.agent_messages m
        join private.analytics_conversation_agents ca on ca.conversation_id = m.conversation_id
       where m.role = 'user'
       group by 1, 2
    ) x
   group by hour, agent_id;
  insert into private.analytics_user_hours (hour, agent_id, user_id, messages)
  select date_trunc('hour', m.created_at, 'UTC'), ca.agent_id, m.user_id, count(*)
    from public.agent_messages m
    join private.analytics_conversation_agents ca on ca.conversation_id = m.conversation_id
   where m.role = 'user'
   group by 1, 2, 3;
  insert into private.analytics_replies (message_id, created_at, agent_id, status, error_code,
                                         prompt_tokens, completion_tokens, latency_ms, ttft_ms,
                                         retried)
  select m.id, m.created_at, ca.agent_id, m.status, m.error_code, m.prompt_tokens,
         m.completion_tokens, m.latency_ms, m.ttft_ms, coalesce(j.attempts, 0) > 1
    from public.agent_messages m
    join private.analytics_conversation_agents ca on ca.conversation_id = m.conversation_id
    left join private.chat_jobs j on j.message_id = m.id
   where m.role = 'assistant';
  insert into private.analytics_feedback (feedback_id, created_at, agent_id, rating)
  select f.id, f.created_at, ca.agent_id, f.rating
    from public.message_feedback f
    join public.agent_messages m on m.id = f.message_id
    join private.analytics_conversation_agents ca on ca.conversation_id = m.conversation_id;
end
$$;

-- Number the users of analytics_user_hours again and build every cell from its rows, one
-- statement each: a cell's bitmap is written as text ('0' for each key skipped since the

alter table private.analytics_reply_hours rename to analytics_reply_hour_cells;
alter table private.analytics_reply_days rename to analytics_reply_day_cells;
alter index private.analytics_reply_hours_pkey rename to analytics_reply_hour_cells_pkey;
alter index private.analytics_reply_days_pkey rename to analytics_reply_day_cells_pkey;

-- One finished reply or refused send added (or, with negative counts, taken out again), waiting to
-- be folded into its hour's cell and its agent's day's cell. Insert-only: no index, no key; the
-- fold deletes what it moves.
create table private.analytics_reply_changes (
  hour timestamptz not null,
  agent_id uuid not null,
  replies integer not null default 0,
  completed integer not null default 0,
  failed integer not null default 0,
  retries integer not null default 0,
  prompt_tokens bigint not null default 0,
  completion_tokens bigint not null default 0,
  rate_limited integer not null default 0,
  latency numeric not null default 0,
  ttft numeric not null default 0
);

alter table private.analytics_reply_changes enable row level security;
revoke all on table private.analytics_reply_changes from public, anon, authenticated;
grant all on table private.analytics_reply_changes to service_role;

-- What the reports read: the cells and the changes not folded yet, as rows to sum (as
-- private.analytics_hourly: summing in the view doubled the metrics' time on 90 days).
create view private.analytics_reply_hours with (security_invoker = true) as
select c.hour, c.replies, c.completed, c.failed, c.retries, c.prompt_tokens,
       c.completion_tokens, c.rate_limited, c.latency, c.ttft
  from private.analytics_reply_hour_cells c
union all
select d.hour, d.replies, d.completed, d.failed, d.retries, d.prompt_tokens,
       d.completion_tokens, d.rate_limited, d.latency, d.ttft
  from private.analytics_reply_changes d;

create view private.analytics_reply_days with (security_invoker = true) as
select c.day, c.agent_id, c.replies, c.completed, c.failed, c.retries, c.prompt_tokens,
       c.completion_tokens, c.rate_limited, c.latency, c.ttft
  from private.analytics_reply_day_cells c
union all
select (d.hour at time zone 'UTC')::date, d.agent_id, d.replies, d.completed, d.failed,
       d.retries, d.prompt_tokens, d.completion_tokens, d.rate_limited, d.latency, d.ttft
  from private.analytics_reply_changes d;

revoke all on table private.analytics_reply_hours from public, anon, authenticated;
revoke all on table private.analytics_reply_days from public, anon, authenticated;
grant select on table private.analytics_reply_hours to service_role;
grant select on table private.analytics_reply_days to service_role;

-- A finished reply added to the cells (p_sign −1 takes it out again): one change row.
create or replace function private.analytics_add_reply(
  p_reply private.analytics_replies,
  p_sign integer
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  insert into private.analytics_reply_changes
         (hour, agent_id, replies, completed, failed, retries, prompt_tokens, completion_tokens,
          latency, ttft)
  values (date_trunc('hour', p_reply.created_at, 'UTC'), p_reply.agent_id, p_sign,
          p_sign * (p_reply.status = 'completed')::integer,
          p_sign * (p_reply.status = 'failed')::integer,
          p_sign * p_reply.retried::integer,
          p_sign * coalesce(p_reply.prompt_tokens, 0)::bigint,
          p_sign * coalesce(p_reply.completion_tokens, 0)::bigint,
          case when p_reply.status = 'completed'
               then p_sign * private.analytics_histogram_unit(p_reply.latency_bucket) else 0 end,
          case when p_reply.status = 'completed'
               then p_sign * private.analytics_histogram_unit(p_reply.ttft_bucket) else 0 end);
end
$$;

-- A refused send counted for its hour and its deployment's agent (p_sign −1 takes it out again).
create or replace function private.analytics_add_rate_limited(
  p_at timestamptz,
  p_agent uuid,
  p_sign integer
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  insert into private.analytics_reply_changes (hour, agent_id, rate_limited)
  values (date_trunc('hour', p_at, 'UTC'), p_agent, p_sign);
end
$$;

-- Moves every change into its cells, one statement per kind: the changes each deletes are exactly
-- the ones it adds (a change committed meanwhile waits for the next fold). One fold at a time (a
-- second one returns at once); returns how many changes it moved.
create function private.analytics_fold()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  hourly_count integer;
  moved_count integer;
begin
  if not pg_try_advisory_xact_lock(hashtextextended('agentmarket.analytics_fold', 0)) then
    return 0;
  end if;
  with moved as (
    delete from private.analytics_hourly_changes returning *
  ),
  cells as (
    insert into private.analytics_hourly_cells as t
           (hour, agent_id, deployments, conversations, user_messages)
    select m.hour, m.agent_id, sum(m.deployments), sum(m.conversations), sum(m.user_messages)
      from moved m
     group by m.hour, m.agent_id
     order by m.hour, m.agent_id
    on conflict (hour, agent_id) do update
      set deployments = t.deployments + excluded.deployments,
          conversations = t.conversations + excluded.conversations,
          user_messages = t.user_messages + excluded.user_messages
  )
  select count(*) into hourly_count from moved;
  with moved as (
    delete from private.analytics_reply_changes returning *
  ),
  hour_cells as (
    insert into private.analytics_reply_hour_cells as t
           (hour, replies, completed, failed, retries, prompt_tokens, completion_tokens,
            rate_limited, latency, ttft)
    select m.hour, sum(m.replies), sum(m.completed), sum(m.failed), sum(m.retries),
           sum(m.prompt_tokens), sum(m.completion_tokens), sum(m.rate_limited), sum(m.latency),
           sum(m.ttft)
      from moved m
     group by m.hour
     order by m.hour
    on conflict (hour) do update
      set replies = t.replies + excluded.replies,
          completed = t.completed + excluded.completed,
          failed = t.failed + excluded.failed,
          retries = t.retries + excluded.retries,
          prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = t.completion_tokens + excluded.completion_tokens,
          rate_limited = t.rate_limited + excluded.rate_limited,
          latency = t.latency + excluded.latency,
          ttft = t.ttft + excluded.ttft
  ),
  day_cells as (
    insert into private.analytics_reply_day_cells as t
           (day, agent_id, replies, completed, failed, retries, prompt_tokens,
            completion_tokens, rate_limited, latency, ttft)
    select (m.hour at time zone 'UTC')::date, m.agent_id, sum(m.replies), sum(m.completed),
           sum(m.failed), sum(m.retries), sum(m.prompt_tokens), sum(m.completion_tokens),
           sum(m.rate_limited), sum(m.latency), sum(m.ttft)
      from moved m
     group by 1, 2
     order by 1, 2
    on conflict (day, agent_id) do update
      set replies = t.replies + excluded.replies,
          completed = t.completed + excluded.completed,
          failed = t.failed + excluded.failed,
          retries = t.retries + excluded.retries,
          prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
          completion_tokens = t.completion_tokens + excluded.completion_tokens,
          rate_limited = t.rate_limited + excluded.rate_limited,
          latency = t.latency + excluded.latency,
          ttft = t.ttft + excluded.ttft
  )
  select count(*) into moved_count from moved;
  return hourly_count + moved_count;
end
$$;

-- The cells counted again from analytics_replies and the events; no change is left to fold.
create or replace function private.analytics_rebuild_reply_cells()
returns void
language plpgsql
set search_path = ''
as $$
begin
  truncate private.analytics_reply_hour_cells, private.analytics_reply_day_cells,
           private.analytics_reply_changes;
  with finished as materialized (
    select r.created_at, r.agent_id, (r.status = 'completed')::integer as completed,
           (r.status = 'failed')::integer as failed, r.retried::integer as retries,
           coalesce(r.prompt_tokens, 0)::bigint as prompt_tokens,
           coalesce(r.completion_tokens, 0)::bigint as completion_tokens,
           case when r.status = 'completed' then private.analytics_histogram_unit(r.latency_bucket)
                else 0 end as latency,
           case when r.status = 'completed' then private.analytics_histogram_unit(r.ttft_bucket)
                else 0 end as ttft
      from private.analytics_replies r
     where r.status in ('completed', 'failed', 'cancelled')
  ),
  hour_cells as (
    insert into private.analytics_reply_hour_cells
           (hour, replies, completed, failed, retries, prompt_tokens, completion_tokens, latency,
            ttft)
    select date_trunc('hour', f.created_at, 'UTC'), count(*), sum(f.completed), sum(f.failed),
           sum(f.retries), sum(f.prompt_tokens), sum(f.completion_tokens), sum(f.latency),
           sum(f.ttft)
      from finished f
     group by 1
  )
  insert into private.analytics_reply_day_cells
         (day, agent_id, replies, completed, failed, retries, prompt_tokens, completion_tokens,
          latency, ttft)
  select (f.created_at at time zone 'UTC')::date, f.agent_id, count(*), sum(f.completed),
         sum(f.failed), sum(f.retries), sum(f.prompt_tokens), sum(f.completion_tokens),
         sum(f.latency), sum(f.ttft)
    from finished f
   group by 1, 2;
  with limited as materialized (
    select t.created_at, d.agent_id
      from private.telemetry_events t
      join public.agent_deployments d on d.id = t.deployment_id
     where t.name = 'agent.chat.rate_limited'
  ),
  hour_cells as (
    insert into private.analytics_reply_hour_cells as c (hour, rate_limited)
    select date_trunc('hour', l.created_at, 'UTC'), count(*) from limited l group by 1
    on conflict (hour) do update set rate_limited = excluded.rate_limited
  )
  insert into private.analytics_reply_day_cells as c (day, agent_id, rate_limited)
  select (l.created_at at time zone 'UTC')::date, l.agent_id, count(*) from limited l group by 1, 2
  on conflict (day, agent_id) do update set rate_limited = excluded.rate_limited;
end
$$;

revoke all on function private.analytics_fold() from public, anon, authenticated;
grant execute on function private.analytics_fold() to service_role;
