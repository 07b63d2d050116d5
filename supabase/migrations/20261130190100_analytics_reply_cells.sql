-- The replies' metrics at size: finished replies counted into cells the triggers keep, with their
-- latency and time to first token as mergeable histograms (docs/api.md#admin-analytics,
-- docs/architecture.md#admin-analytics, docs/benchmarks.md).
--
-- 20261130180100 answers the metrics from private.analytics_replies, one row per reply: exact, but a
-- 90-day range of a busy marketplace reads half a million rows and sorts them six times (seconds).
-- Here every finished reply (completed, failed or cancelled) is also added to two cells:
--
--   private.analytics_reply_hours   per UTC hour, all agents: the days of a report (a day in any
--                                   zone whose midnights fall on whole UTC hours is a union of hours)
--   private.analytics_reply_days    per UTC day and agent: the agents of a report (the UTC days
--                                   wholly inside the range; the partial days at its ends are read
--                                   from analytics_replies)
--
-- Each cell holds counts, token sums, the sends refused by a limit (the `agent.chat.rate_limited`
-- telemetry events of the agent's deployments, kept by triggers on telemetry_events and on
-- agent_deployments) and two histograms. A histogram is a numeric whose decimal digits,
-- ten per bucket from the right, are the bucket counts: Σ count(b) · 10^(10·b). Adding histograms is then
-- numeric addition, which `sum()` does natively (a 90-day report sums ~7 000 cells in milliseconds);
-- a bucket overflows only past 10^10 replies. Buckets (private.analytics_bucket, mirrored by
-- agentmarket.domain.histogram): 1 ms wide below 64 ms, then 32 per doubling, so a bucket is at
-- most 1/32 of its lower bound wide and a percentile read from it is within 3.125 % of the exact one.
--
-- private.marketplace_metrics answers from the cells (private.marketplace_metrics_cells, the
-- percentiles then computed by the API from the histograms) when the range holds more than 20 000
-- completed replies, has no agent/category/kind filter and its zone is hour-aligned; otherwise from
-- analytics_replies with exact percentile_cont (private.marketplace_metrics_rollup), which is fast
-- there. The report says which: `percentiles.method` = 'histogram' | 'exact' (the API adds the
-- estimates' bound, agentmarket.domain.histogram.MAX_RELATIVE_ERROR).
-- tests/integration/test_analytics_histograms.py proves the cells equal a recount and the two paths
-- agree (counts exactly, percentiles within the bound).

-- A duration's bucket: 0..63 exactly, then 64 + 32·(e − 6) + (v >> (e − 5)) − 32 for 2^e ≤ v < 2^(e+1).
create function private.analytics_bucket(p_ms integer)
returns smallint
language sql
immutable
parallel safe
set search_path = ''
as $$
  select (case
            when p_ms is null then null
            when p_ms < 64 then greatest(p_ms, 0)
            else 64 + (x.e - 6) * 32 + ((p_ms >> (x.e - 5)) - 32)
          end)::smallint
    from (select 32 - position('1' in p_ms::bit(32)::text) as e) x
$$;

-- Computed once when the row is written: the reports and the rebuild read them as they are.
alter table private.analytics_replies
  add column latency_bucket smallint generated always as (private.analytics_bucket(latency_ms)) stored,
  add column ttft_bucket smallint generated always as (private.analytics_bucket(ttft_ms)) stored;

-- Filtered reports read one agent's replies; the errors and the replies still running are few.
create index analytics_replies_agent_created_idx on private.analytics_replies (agent_id, created_at);
create index analytics_replies_failed_idx on private.analytics_replies (created_at)
  include (agent_id, error_code) where status = 'failed';
create index analytics_replies_open_idx on private.analytics_replies (created_at)
  where status in ('queued', 'running');
create index telemetry_events_rate_limited_idx on private.telemetry_events (created_at)
  include (deployment_id) where name = 'agent.chat.rate_limited';

create table private.analytics_reply_hours (
  hour timestamptz primary key,
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

create table private.analytics_reply_days (
  day date not null,
  agent_id uuid not null,
  replies integer not null default 0,
  completed integer not null default 0,
  failed integer not null default 0,
  retries integer not null default 0,
  prompt_tokens bigint not null default 0,
  completion_tokens bigint not null default 0,
  rate_limited integer not null default 0,
  latency numeric not null default 0,
  ttft numeric not null default 0,
  primary key (day, agent_id)
);

alter table private.analytics_reply_hours enable row level security;
alter table private.analytics_reply_days enable row level security;
revoke all on table private.analytics_reply_hours from public, anon, authenticated;
revoke all on table private.analytics_reply_days from public, anon, authenticated;
grant all on table private.analytics_reply_hours to service_role;
grant all on table private.analytics_reply_days to service_role;

-- One bucket as a histogram: 10^(10·b).
create function private.analytics_histogram_unit(p_bucket smallint)
returns numeric
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case when p_bucket is null then 0 else ('1e' || 10 * p_bucket)::numeric end
$$;

-- Adds a finished reply to its two cells (p_sign −1 takes it out again). PL/pgSQL, so its two
-- statements are planned once per session rather than on every reply.
create function private.analytics_add_reply(p_reply private.analytics_replies, p_sign integer)
returns void
language plpgsql
set search_path = ''
as $$
declare
  completed integer := p_sign * (p_reply.status = 'completed')::integer;
  failed integer := p_sign * (p_reply.status = 'failed')::integer;
  retries integer := p_sign * p_reply.retried::integer;
  prompt_tokens bigint := p_sign * coalesce(p_reply.prompt_tokens, 0)::bigint;
  completion_tokens bigint := p_sign * coalesce(p_reply.completion_tokens, 0)::bigint;
  latency numeric := 0;
  ttft numeric := 0;
begin
  if p_reply.status = 'completed' then
    latency := p_sign * private.analytics_histogram_unit(p_reply.latency_bucket);
    ttft := p_sign * private.analytics_histogram_unit(p_reply.ttft_bucket);
  end if;
  insert into private.analytics_reply_hours as t
         (hour, replies, completed, failed, retries, prompt_tokens, completion_tokens, latency, ttft)
  values (date_trunc('hour', p_reply.created_at, 'UTC'), p_sign, completed, failed, retries,
          prompt_tokens, completion_tokens, latency, ttft)
  on conflict (hour) do update
    set replies = t.replies + excluded.replies,
        completed = t.completed + excluded.completed,
        failed = t.failed + excluded.failed,
        retries = t.retries + excluded.retries,
        prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = t.completion_tokens + excluded.completion_tokens,
        latency = t.latency + excluded.latency,
        ttft = t.ttft + excluded.ttft;
  insert into private.analytics_reply_days as t
         (day, agent_id, replies, completed, failed, retries, prompt_tokens, completion_tokens,
          latency, ttft)
  values ((p_reply.created_at at time zone 'UTC')::date, p_reply.agent_id, p_sign, completed,
          failed, retries, prompt_tokens, completion_tokens, latency, ttft)
  on conflict (day, agent_id) do update
    set replies = t.replies + excluded.replies,
        completed = t.completed + excluded.completed,
        failed = t.failed + excluded.failed,
        retries = t.retries + excluded.retries,
        prompt_tokens = t.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = t.completion_tokens + excluded.completion_tokens,
        latency = t.latency + excluded.latency,
        ttft = t.ttft + excluded.ttft;
end
$$;

-- The hourly rollup's upsert (20261130180100), which every send runs, as PL/pgSQL for the same
-- reason: a SQL function's body is planned again on every call (~105 → ~45 µs per call).
create or replace function private.analytics_add_hourly(
  p_at timestamptz, p_agent uuid, p_deployments integer, p_conversations integer,
  p_user_messages integer
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  insert into private.analytics_hourly as h (hour, agent_id, deployments, conversations, user_messages)
  values (date_trunc('hour', p_at, 'UTC'), p_agent, p_deployments, p_conversations, p_user_messages)
  on conflict (hour, agent_id) do update
    set deployments = h.deployments + excluded.deployments,
        conversations = h.conversations + excluded.conversations,
        user_messages = h.user_messages + excluded.user_messages;
end
$$;

-- A refused send (an `agent.chat.rate_limited` event of a deployment) counted in the cells of its
-- hour and of its deployment's agent's day (p_sign −1 takes it out again).
create function private.analytics_add_rate_limited(p_at timestamptz, p_agent uuid, p_sign integer)
returns void
language plpgsql
set search_path = ''
as $$
begin
  insert into private.analytics_reply_hours as t (hour, rate_limited)
  values (date_trunc('hour', p_at, 'UTC'), p_sign)
  on conflict (hour) do update set rate_limited = t.rate_limited + excluded.rate_limited;
  insert into private.analytics_reply_days as t (day, agent_id, rate_limited)
  values ((p_at at time zone 'UTC')::date, p_agent, p_sign)
  on conflict (day, agent_id) do update set rate_limited = t.rate_limited + excluded.rate_limited;
end
$$;

-- The events: counted when written, taken out when deleted or changed (an event whose deployment
-- does not exist counts nowhere, as in the exact report).
create function private.analytics_rate_limited_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  agent uuid;
begin
  if tg_op in ('UPDATE', 'DELETE') and old.name = 'agent.chat.rate_limited' then
    select d.agent_id into agent from public.agent_deployments d where d.id = old.deployment_id;
    if agent is not null then
      perform private.analytics_add_rate_limited(old.created_at, agent, -1);
    end if;
  end if;
  if tg_op in ('INSERT', 'UPDATE') and new.name = 'agent.chat.rate_limited' then
    select d.agent_id into agent from public.agent_deployments d where d.id = new.deployment_id;
    if agent is not null then
      perform private.analytics_add_rate_limited(new.created_at, agent, 1);
    end if;
  end if;
  return null;
end
$$;

create trigger telemetry_events_rate_limited_insert
  after insert on private.telemetry_events
  for each row when (new.name = 'agent.chat.rate_limited')
  execute function private.analytics_rate_limited_changed();
create trigger telemetry_events_rate_limited_delete
  after delete on private.telemetry_events
  for each row when (old.name = 'agent.chat.rate_limited')
  execute function private.analytics_rate_limited_changed();
create trigger telemetry_events_rate_limited_update
  after update of name, created_at, deployment_id on private.telemetry_events
  for each row when (old.name = 'agent.chat.rate_limited' or new.name = 'agent.chat.rate_limited')
  execute function private.analytics_rate_limited_changed();

-- A deployment deleted takes its refused sends along (the exact report finds an event's agent
-- through its deployment; a deployment never changes its agent).
create function private.analytics_deployment_rate_limited_deleted()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  at timestamptz;
begin
  for at in
    select t.created_at from private.telemetry_events t
     where t.deployment_id = old.id and t.name = 'agent.chat.rate_limited'
  loop
    perform private.analytics_add_rate_limited(at, old.agent_id, -1);
  end loop;
  return null;
end
$$;

create trigger agent_deployments_rate_limited_cells
  after delete on public.agent_deployments
  for each row execute function private.analytics_deployment_rate_limited_deleted();

create function private.analytics_reply_cells_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE'
     and (old.created_at, old.agent_id, old.status, old.retried, old.prompt_tokens,
          old.completion_tokens, old.latency_bucket, old.ttft_bucket)
         is not distinct from
         (new.created_at, new.agent_id, new.status, new.retried, new.prompt_tokens,
          new.completion_tokens, new.latency_bucket, new.ttft_bucket) then
    return null;
  end if;
  if tg_op in ('UPDATE', 'DELETE') and old.status in ('completed', 'failed', 'cancelled') then
    perform private.analytics_add_reply(old, -1);
  end if;
  if tg_op in ('INSERT', 'UPDATE') and new.status in ('completed', 'failed', 'cancelled') then
    perform private.analytics_add_reply(new, 1);
  end if;
  return null;
end
$$;

create trigger analytics_replies_cells
  after insert or update or delete on private.analytics_replies
  for each row execute function private.analytics_reply_cells_changed();

-- The cells counted again from analytics_replies.
create function private.analytics_rebuild_reply_cells()
returns void
language plpgsql
set search_path = ''
as $$
begin
  truncate private.analytics_reply_hours, private.analytics_reply_days;
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
    insert into private.analytics_reply_hours
           (hour, replies, completed, failed, retries, prompt_tokens, completion_tokens, latency,
            ttft)
    select date_trunc('hour', f.created_at, 'UTC'), count(*), sum(f.completed), sum(f.failed),
           sum(f.retries), sum(f.prompt_tokens), sum(f.completion_tokens), sum(f.latency),
           sum(f.ttft)
      from finished f
     group by 1
  )
  insert into private.analytics_reply_days
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
    insert into private.analytics_reply_hours as c (hour, rate_limited)
    select date_trunc('hour', l.created_at, 'UTC'), count(*) from limited l group by 1
    on conflict (hour) do update set rate_limited = excluded.rate_limited
  )
  insert into private.analytics_reply_days as c (day, agent_id, rate_limited)
  select (l.created_at at time zone 'UTC')::date, l.agent_id, count(*) from limited l group by 1, 2
  on conflict (day, agent_id) do update set rate_limited = excluded.rate_limited;
end
$$;

-- Everything counted again (after a load with the triggers off). analytics_rebuild_base refills
-- analytics_replies row by row: the cells' trigger stays off meanwhile (the tables are locked and
-- truncated anyway) and the cells are counted once at the end.
create or replace function private.analytics_rebuild()
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  alter table private.analytics_replies disable trigger analytics_replies_cells;
  perform private.analytics_rebuild_base();
  alter table private.analytics_replies enable trigger analytics_replies_cells;
  perform private.analytics_rebuild_presence();
  perform private.analytics_rebuild_reply_cells();
end
$$;

-- One metric object with the same keys as analytics_metric's, the two histograms (as decimal text)
-- in place of the percentiles: `latency_hist`, `ttft_hist`. PL/pgSQL: its plan is kept across the
-- ~150 calls of a report.
create function private.analytics_metric_histogram(
  p_replies numeric,
  p_completed numeric,
  p_failed numeric,
  p_errors jsonb,
  p_retries numeric,
  p_prompt_tokens numeric,
  p_completion_tokens numeric,
  p_rate_limited numeric,
  p_latency numeric,
  p_ttft numeric
)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
begin
  return jsonb_build_object(
    'replies', coalesce(p_replies, 0),
    'completed', coalesce(p_completed, 0),
    'failed', coalesce(p_failed, 0),
    'error_rate', round(coalesce(p_failed, 0) / nullif(coalesce(p_completed, 0) + coalesce(p_failed, 0), 0), 4),
    'errors_by_code', coalesce(p_errors, '{}'::jsonb),
    'retries', coalesce(p_retries, 0),
    'prompt_tokens', coalesce(p_prompt_tokens, 0),
    'completion_tokens', coalesce(p_completion_tokens, 0),
    'rate_limited', coalesce(p_rate_limited, 0),
    'latency_hist', coalesce(p_latency, 0)::text,
    'ttft_hist', coalesce(p_ttft, 0)::text
  );
end
$$;

-- The metrics of every agent from the cells, for a zone whose midnights in the range fall on whole
-- UTC hours (private.analytics_hour_aligned). Counts and sums are exact and equal
-- marketplace_metrics_rollup's; the percentiles come as histograms.
create function private.marketplace_metrics_cells(p_from date, p_to date, p_tz text)
returns jsonb
language plpgsql
stable
set search_path = ''
set work_mem = '64MB'
set jit = off
as $$
declare
  b record;
  whole_from timestamptz;  -- the UTC days wholly inside [t0, t1) run from whole_from to whole_to
  whole_to timestamptz;
  result jsonb;
begin
  b := private.analytics_bounds(p_from, p_to, p_tz);
  whole_from := date_trunc('day', b.t0 + interval '1 day' - interval '1 microsecond', 'UTC');
  whole_to := greatest(date_trunc('day', b.t1, 'UTC'), whole_from);

  with days as (
    select g::date as day from generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') g
  ),
  hours as (
    select h as hour, (h at time zone p_tz)::date as day
      from generate_series(b.t0, b.t1 - interval '1 hour', interval '1 hour') h
  ),
  -- Finished replies per day: the hour cells.
  finished_days as (
    select hs.day, sum(c.replies) as replies, sum(c.completed) as completed,
           sum(c.failed) as failed, sum(c.retries) as retries,
           sum(c.prompt_tokens) as prompt_tokens, sum(c.completion_tokens) as completion_tokens,
           sum(c.rate_limited) as rate_limited, sum(c.latency) as latency, sum(c.ttft) as ttft
      from private.analytics_reply_hours c
      join hours hs on hs.hour = c.hour
     where c.hour >= b.t0 and c.hour < b.t1
     group by hs.day
  ),
  -- Finished replies and refused sends per agent: the day cells inside the range, the replies
  -- and the events at its ends.
  finished_agents as (
    select x.agent_id, sum(x.replies) as replies, sum(x.completed) as completed,
           sum(x.failed) as failed, sum(x.retries) as retries,
           sum(x.prompt_tokens) as prompt_tokens, sum(x.completion_tokens) as completion_tokens,
           sum(x.rate_limited) as rate_limited, sum(x.latency) as latency, sum(x.ttft) as ttft
      from (
        select c.agent_id, c.replies, c.completed, c.failed, c.retries, c.prompt_tokens,
               c.completion_tokens, c.rate_limited, c.latency, c.ttft
          from private.analytics_reply_days c
         where c.day >= (whole_from at time zone 'UTC')::date
           and c.day < (whole_to at time zone 'UTC')::date
        union all
        select r.agent_id, 1, (r.status = 'completed')::integer, (r.status = 'failed')::integer,
               r.retried::integer, coalesce(r.prompt_tokens, 0), coalesce(r.completion_tokens, 0), 0,
               case when r.status = 'completed'
                    then private.analytics_histogram_unit(r.latency_bucket) else 0 end,
               case when r.status = 'completed'
                    then private.analytics_histogram_unit(r.ttft_bucket) else 0 end
          from private.analytics_replies r
         where r.status in ('completed', 'failed', 'cancelled')
           and ((r.created_at >= b.t0 and r.created_at < whole_from)
                or (r.created_at >= whole_to and r.created_at < b.t1))
        union all
        select d.agent_id, 0, 0, 0, 0, 0, 0, 1, 0, 0
          from private.telemetry_events t
          join public.agent_deployments d on d.id = t.deployment_id
         where t.name = 'agent.chat.rate_limited'
           and ((t.created_at >= b.t0 and t.created_at < whole_from)
                or (t.created_at >= whole_to and t.created_at < b.t1))
      ) x
     group by x.agent_id
  ),
  -- Replies still queued or running: in no cell yet.
  running as (
    select grouping(o.agent_id) = 0 as by_agent, o.agent_id, o.day, count(*) as replies,
           count(*) filter (where o.retried) as retries,
           coalesce(sum(o.prompt_tokens), 0) as prompt_tokens,
           coalesce(sum(o.completion_tokens), 0) as completion_tokens
      from (
        select (r.created_at at time zone p_tz)::date as day, r.agent_id, r.retried,
               r.prompt_tokens, r.completion_tokens
          from private.analytics_replies r
         where r.status in ('queued', 'running') and r.created_at >= b.t0 and r.created_at < b.t1
      ) o
     group by grouping sets ((o.agent_id), (o.day))
  ),
  errs as (
    select e.by_agent, e.by_day, e.agent_id, e.day, jsonb_object_agg(e.error_code, e.n) as errors
      from (
        select grouping(r.agent_id) = 0 as by_agent, grouping(r.day) = 0 as by_day,
               r.agent_id, r.day, r.error_code, count(*) as n
          from (
            select (f.created_at at time zone p_tz)::date as day, f.agent_id, f.error_code
              from private.analytics_replies f
             where f.status = 'failed' and f.created_at >= b.t0 and f.created_at < b.t1
          ) r
         group by grouping sets ((r.error_code), (r.agent_id, r.error_code), (r.day, r.error_code))
      ) e
     group by e.by_agent, e.by_day, e.agent_id, e.day
  ),
  per_day as (
    select ds.day,
           coalesce(fd.replies, 0) + coalesce(op.replies, 0) as replies,
           coalesce(fd.completed, 0) as completed,
           coalesce(fd.failed, 0) as failed,
           coalesce(fd.retries, 0) + coalesce(op.retries, 0) as retries,
           coalesce(fd.prompt_tokens, 0) + coalesce(op.prompt_tokens, 0) as prompt_tokens,
           coalesce(fd.completion_tokens, 0) + coalesce(op.completion_tokens, 0) as completion_tokens,
           coalesce(fd.rate_limited, 0) as rate_limited, fd.latency, fd.ttft, e.errors
      from days ds
      left join finished_days fd on fd.day = ds.day
      left join running op on not op.by_agent and op.day = ds.day
      left join errs e on e.by_day and e.day = ds.day
  ),
  per_agent as (
    select a.id, a.slug, a.name,
           private.analytics_metric_histogram(
             coalesce(fa.replies, 0) + coalesce(op.replies, 0), fa.completed, fa.failed, e.errors,
             coalesce(fa.retries, 0) + coalesce(op.retries, 0),
             coalesce(fa.prompt_tokens, 0) + coalesce(op.prompt_tokens, 0),
             coalesce(fa.completion_tokens, 0) + coalesce(op.completion_tokens, 0),
             fa.rate_limited, fa.latency, fa.ttft) as m
      from public.marketplace_agents a
      left join finished_agents fa on fa.agent_id = a.id
      left join running op on op.by_agent and op.agent_id = a.id
      left join errs e on e.by_agent and e.agent_id = a.id
     -- Cells emptied by deletes stay as zero rows: an agent is listed for what it has.
     where coalesce(fa.replies, 0) + coalesce(op.replies, 0) > 0 or coalesce(fa.rate_limited, 0) > 0
  )
  select jsonb_build_object(
    'range', jsonb_build_object('from', p_from, 'to', p_to, 'tz', p_tz),
    'filters', jsonb_build_object('agent', null, 'category', null, 'kind', null),
    'overall', (
      select private.analytics_metric_histogram(
               sum(pd.replies), sum(pd.completed), sum(pd.failed),
               (select e.errors from errs e where not e.by_agent and not e.by_day),
               sum(pd.retries), sum(pd.prompt_tokens), sum(pd.completion_tokens),
               sum(pd.rate_limited), sum(pd.latency), sum(pd.ttft))
        from per_day pd
    ),
    'agents', coalesce((
      select jsonb_agg(jsonb_build_object('agent_id', pa.id, 'slug', pa.slug, 'name', pa.name) || pa.m
                       order by (pa.m ->> 'replies')::bigint desc, pa.slug)
        from per_agent pa
    ), '[]'::jsonb),
    'days', (
      select jsonb_agg(
               jsonb_build_object('day', pd.day)
               || private.analytics_metric_histogram(
                    pd.replies, pd.completed, pd.failed, pd.errors, pd.retries, pd.prompt_tokens,
                    pd.completion_tokens, pd.rate_limited, pd.latency, pd.ttft)
               order by pd.day)
        from per_day pd
    )
  ) into result;
  return result;
end
$$;

-- The admin API: admins only, then the cells when the range is large, unfiltered and hour-aligned,
-- else the exact percentiles from analytics_replies. `percentiles` says which.
create or replace function private.marketplace_metrics(
  p_from date,
  p_to date,
  p_tz text,
  p_agent text default null,
  p_category text default null,
  p_kind text default null
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  b record;
  finished bigint;
begin
  perform private.require_admin();
  b := private.analytics_bounds(p_from, p_to, p_tz);
  if p_agent is null and p_category is null and p_kind is null
     and private.analytics_hour_aligned(p_from, p_to, p_tz) then
    select coalesce(sum(h.completed), 0) into finished
      from private.analytics_reply_hours h
     where h.hour >= b.t0 and h.hour < b.t1;
    if finished > 20000 then
      return private.marketplace_metrics_cells(p_from, p_to, p_tz)
             || '{"percentiles": {"method": "histogram"}}'::jsonb;
    end if;
  end if;
  return private.marketplace_metrics_rollup(p_from, p_to, p_tz, p_agent, p_category, p_kind)
         || '{"percentiles": {"method": "exact"}}'::jsonb;
end
$$;

revoke all on function private.analytics_bucket(integer) from public, anon, authenticated;
revoke all on function private.analytics_histogram_unit(smallint) from public, anon, authenticated;
revoke all on function private.analytics_add_reply(private.analytics_replies, integer) from public, anon, authenticated;
revoke all on function private.analytics_reply_cells_changed() from public, anon, authenticated;
revoke all on function private.analytics_add_rate_limited(timestamptz, uuid, integer) from public, anon, authenticated;
revoke all on function private.analytics_rate_limited_changed() from public, anon, authenticated;
revoke all on function private.analytics_deployment_rate_limited_deleted() from public, anon, authenticated;
revoke all on function private.analytics_rebuild_reply_cells() from public, anon, authenticated;
revoke all on function private.analytics_metric_histogram(numeric, numeric, numeric, jsonb, numeric, numeric, numeric, numeric, numeric, numeric)
  from public, anon, authenticated;
revoke all on function private.marketplace_metrics_cells(date, date, text) from public, anon, authenticated;

grant execute on function private.analytics_bucket(integer) to service_role;
grant execute on function private.analytics_histogram_unit(smallint) to service_role;
grant execute on function private.analytics_add_reply(private.analytics_replies, integer) to service_role;
grant execute on function private.analytics_reply_cells_changed() to service_role;
grant execute on function private.analytics_add_rate_limited(timestamptz, uuid, integer) to service_role;
grant execute on function private.analytics_rate_limited_changed() to service_role;
grant execute on function private.analytics_deployment_rate_limited_deleted() to service_role;
grant execute on function private.analytics_rebuild_reply_cells() to service_role;
grant execute on function private.analytics_metric_histogram(numeric, numeric, numeric, jsonb, numeric, numeric, numeric, numeric, numeric, numeric)
  to service_role;
grant execute on function private.marketplace_metrics_cells(date, date, text) to service_role;

-- JIT compilation of the reports' plans (their row estimates are large) costs ~2 s to save
-- milliseconds: off for every report.
alter function private.marketplace_stats_rollup(date, date, text, text, text, text) set jit = off;
alter function private.marketplace_stats_recount(date, date, text, text, text, text) set jit = off;
alter function private.marketplace_metrics_rollup(date, date, text, text, text, text) set jit = off;
alter function private.marketplace_metrics_recount(date, date, text, text, text, text) set jit = off;

-- What exists already is counted now; from here on the trigger keeps the cells.
select private.analytics_rebuild_reply_cells();
