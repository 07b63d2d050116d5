-- The reply cells without hot rows (docs/architecture.md#admin-analytics, docs/operations.md).
--
-- 20261130190100 added every finished reply to two cells in its own transaction: its UTC hour for
-- all agents and its agent's UTC day. Every reply of an hour rewrote the same hour row (and every
-- reply of an agent the same day row), each ~3 kB with its two histograms, and held the row locked
-- until its commit: about 1.3–1.8 ms of Postgres CPU per message in `agentmarket bench chat`, and a
-- queue of finishes on one row (docs/benchmarks.md).
--
-- Now a finish (or a refused send, or their removal) only inserts one narrow row into
-- private.analytics_reply_changes: no row is updated, nothing waits on anything. The cells become
-- private.analytics_reply_hour_cells and private.analytics_reply_day_cells, and
-- private.analytics_fold_reply_changes() moves the changes into them (one statement; the worker
-- runs it on its gauges' timer, every few seconds). The names the reports read,
-- private.analytics_reply_hours and private.analytics_reply_days, are now views: the cells plus the
-- changes not folded yet, so every report stays exact whenever the fold last ran.
-- tests/integration/test_analytics_histograms.py proves views == recount before and after a fold,
-- and cells alone == recount right after one.

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

-- What the reports read: the cells plus the changes not folded yet.
create view private.analytics_reply_hours with (security_invoker = true) as
select x.hour, sum(x.replies)::integer as replies, sum(x.completed)::integer as completed,
       sum(x.failed)::integer as failed, sum(x.retries)::integer as retries,
       sum(x.prompt_tokens)::bigint as prompt_tokens,
       sum(x.completion_tokens)::bigint as completion_tokens,
       sum(x.rate_limited)::integer as rate_limited, sum(x.latency) as latency,
       sum(x.ttft) as ttft
  from (
    select c.hour, c.replies, c.completed, c.failed, c.retries, c.prompt_tokens,
           c.completion_tokens, c.rate_limited, c.latency, c.ttft
      from private.analytics_reply_hour_cells c
    union all
    select d.hour, d.replies, d.completed, d.failed, d.retries, d.prompt_tokens,
           d.completion_tokens, d.rate_limited, d.latency, d.ttft
      from private.analytics_reply_changes d
  ) x
 group by x.hour;

create view private.analytics_reply_days with (security_invoker = true) as
select x.day, x.agent_id, sum(x.replies)::integer as replies,
       sum(x.completed)::integer as completed, sum(x.failed)::integer as failed,
       sum(x.retries)::integer as retries, sum(x.prompt_tokens)::bigint as prompt_tokens,
       sum(x.completion_tokens)::bigint as completion_tokens,
       sum(x.rate_limited)::integer as rate_limited, sum(x.latency) as latency,
       sum(x.ttft) as ttft
  from (
    select c.day, c.agent_id, c.replies, c.completed, c.failed, c.retries, c.prompt_tokens,
           c.completion_tokens, c.rate_limited, c.latency, c.ttft
      from private.analytics_reply_day_cells c
    union all
    select (d.hour at time zone 'UTC')::date, d.agent_id, d.replies, d.completed, d.failed,
           d.retries, d.prompt_tokens, d.completion_tokens, d.rate_limited, d.latency, d.ttft
      from private.analytics_reply_changes d
  ) x
 group by x.day, x.agent_id;

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

-- Moves every change into its cells, in one statement: the changes it deletes are exactly the
-- ones it adds (a change committed meanwhile waits for the next fold). One fold at a time (a
-- second one returns at once); returns how many changes it moved.
create function private.analytics_fold_reply_changes()
returns integer
language plpgsql
set search_path = ''
as $$
declare
  moved_count integer;
begin
  if not pg_try_advisory_xact_lock(hashtextextended('agentmarket.analytics_fold', 0)) then
    return 0;
  end if;
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
  return moved_count;
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

revoke all on function private.analytics_fold_reply_changes() from public, anon, authenticated;
grant execute on function private.analytics_fold_reply_changes() to service_role;
