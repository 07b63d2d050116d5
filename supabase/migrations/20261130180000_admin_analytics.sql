-- Admin analytics (GET /api/admin/marketplace/stats and /metrics, `agentmarket stats`;
-- docs/api.md#admin-analytics).
--
--   private.is_admin()            app_metadata.role = 'admin' in the verified token (never
--                                 user_metadata, which the user writes themselves)
--   private.marketplace_stats_recount()   deployments, conversations, user messages and chatting users per
--                                 day, what is active now, popular agents, feedback and survey
--   private.marketplace_metrics_recount() replies, errors, retries, tokens, rate-limit rejections and
--                                 latency / time-to-first-token percentiles, overall, per agent and
--                                 per day
--
-- Both read the tables themselves (the exact recount); the API functions private.marketplace_stats
-- and marketplace_metrics (20261130180100_analytics_rollups.sql) check the caller is an admin
-- (AMADM → 403 admin_only) and answer from the rollups, or from these. Days are calendar days in the caller's time zone
-- (`(created_at at time zone tz)::date`), every day of the range present (generate_series); the
-- range's bounds are turned into instants once, so every table is read by a created_at range.
-- An unknown time zone is AMTZN, a reversed or too long range AMRNG (both 422).
--
-- Rate-limit rejections: a refused chat send rolls back, so the functions record each refusal
-- afterwards as an `agent.chat.rate_limited` telemetry event (agentmarket/services/chat.py);
-- the metrics count those events.

create function private.is_admin()
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin', false)
$$;

comment on function private.is_admin() is
  'Whether the caller''s verified token carries app_metadata.role = admin (never user_metadata).';

create function private.require_admin()
returns void
language plpgsql
stable
set search_path = ''
as $$
begin
  if not private.is_admin() then
    raise exception 'admins only' using errcode = 'AMADM';
  end if;
end
$$;

-- The range as instants [t0, t1) in p_tz, after checking it (AMRNG, AMTZN).
create function private.analytics_bounds(p_from date, p_to date, p_tz text, out t0 timestamptz, out t1 timestamptz)
language plpgsql
stable
set search_path = ''
as $$
begin
  if p_from is null or p_to is null or p_to < p_from or p_to - p_from > 366 then
    raise exception 'the range must run forwards and span at most 366 days' using errcode = 'AMRNG';
  end if;
  begin
    t0 := p_from::timestamp at time zone p_tz;
    t1 := (p_to + 1)::timestamp at time zone p_tz;
  exception when invalid_parameter_value then
    raise exception 'unknown time zone' using errcode = 'AMTZN';
  end;
end
$$;

-- The analytics read every table by creation time.
create index agent_messages_created_idx on public.agent_messages (created_at);
create index agent_conversations_created_idx on public.agent_conversations (created_at);
create index agent_deployments_created_idx on public.agent_deployments (created_at);
create index agent_deployments_active_idx
  on public.agent_deployments (agent_id) where status = 'active' and deleted_at is null;

create function private.marketplace_stats_recount(
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
set search_path = ''
as $$
declare
  b record;
  filtered boolean := p_agent is not null or p_category is not null or p_kind is not null;
  result jsonb;
begin
  b := private.analytics_bounds(p_from, p_to, p_tz);

  with agents as (
    select a.id, a.slug, a.name
      from public.marketplace_agents a
     where (p_agent is null or a.slug = p_agent)
       and (p_category is null or a.category = p_category)
       and (p_kind is null or a.kind = p_kind)
  ),
  days as (
    select g::date as day from generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') g
  ),
  deps as (
    select (d.created_at at time zone p_tz)::date as day, d.agent_id
      from public.agent_deployments d
      join agents a on a.id = d.agent_id
     where d.created_at >= b.t0 and d.created_at < b.t1
  ),
  convs as (
    select (c.created_at at time zone p_tz)::date as day, d.agent_id
      from public.agent_conversations c
      join public.agent_deployments d on d.id = c.deployment_id
      join agents a on a.id = d.agent_id
     where c.created_at >= b.t0 and c.created_at < b.t1
  ),
  msgs as (
    select (m.created_at at time zone p_tz)::date as day, d.agent_id, m.user_id
      from public.agent_messages m
      join public.agent_conversations c on c.id = m.conversation_id
      join public.agent_deployments d on d.id = c.deployment_id
      join agents a on a.id = d.agent_id
     where m.created_at >= b.t0 and m.created_at < b.t1 and m.role = 'user'
  ),
  dep_days as (select day, count(*) as n from deps group by day),
  conv_days as (select day, count(*) as n from convs group by day),
  msg_days as (select day, count(*) as n, count(distinct user_id) as users from msgs group by day),
  dep_agents as (select agent_id, count(*) as n from deps group by agent_id),
  conv_agents as (select agent_id, count(*) as n from convs group by agent_id),
  msg_agents as (
    select agent_id, count(*) as n, count(distinct user_id) as users from msgs group by agent_id
  ),
  popular as (
    select row_number() over (
             order by coalesce(da.n, 0) desc, coalesce(ca.n, 0) desc, coalesce(ma.n, 0) desc,
                      coalesce(ma.users, 0) desc, a.slug
           ) as rank,
           a.id as agent_id, a.slug, a.name,
           coalesce(da.n, 0) as deployments, coalesce(ca.n, 0) as conversations,
           coalesce(ma.n, 0) as messages, coalesce(ma.users, 0) as unique_users
      from agents a
      left join dep_agents da on da.agent_id = a.id
      left join conv_agents ca on ca.agent_id = a.id
      left join msg_agents ma on ma.agent_id = a.id
     where da.n is not null or ca.n is not null or ma.n is not null
  ),
  feedback as (
    select count(*) filter (where f.rating = 'like') as likes,
           count(*) filter (where f.rating = 'dislike') as dislikes
      from public.message_feedback f
      join public.agent_messages m on m.id = f.message_id
      join public.agent_conversations c on c.id = m.conversation_id
      join public.agent_deployments d on d.id = c.deployment_id
      join agents a on a.id = d.agent_id
     where f.created_at >= b.t0 and f.created_at < b.t1
  ),
  survey as (
    select count(*) as responses,
           round(avg(s.satisfaction), 2) as avg_satisfaction,
           round(avg(s.ease_of_use), 2) as avg_ease_of_use,
           round(100.0 * (count(*) filter (where s.likelihood_to_recommend >= 9)
                          - count(*) filter (where s.likelihood_to_recommend <= 6))
                 / nullif(count(*), 0), 1) as nps
      from public.survey_responses s
      left join public.agent_deployments d on d.id = s.deployment_id
     where s.created_at >= b.t0 and s.created_at < b.t1
       and (not filtered or d.agent_id in (select id from agents))
  )
  select jsonb_build_object(
    'range', jsonb_build_object('from', p_from, 'to', p_to, 'tz', p_tz),
    'filters', jsonb_build_object('agent', p_agent, 'category', p_category, 'kind', p_kind),
    'now', (
      select jsonb_build_object('active_deployments', count(*),
                                'active_agents', count(distinct d.agent_id))
        from public.agent_deployments d
        join agents a on a.id = d.agent_id
       where d.status = 'active' and d.deleted_at is null
    ),
    'totals', jsonb_build_object(
      'deployments', (select count(*) from deps),
      'conversations', (select count(*) from convs),
      'user_messages', (select count(*) from msgs),
      'unique_users', (select count(distinct user_id) from msgs)
    ),
    'days', (
      select jsonb_agg(jsonb_build_object(
               'day', g.day,
               'deployments', coalesce(dd.n, 0),
               'conversations', coalesce(cd.n, 0),
               'user_messages', coalesce(md.n, 0),
               'unique_users', coalesce(md.users, 0)
             ) order by g.day)
        from days g
        left join dep_days dd on dd.day = g.day
        left join conv_days cd on cd.day = g.day
        left join msg_days md on md.day = g.day
    ),
    'popular_agents', coalesce((
      select jsonb_agg(to_jsonb(p) order by p.rank) from popular p where p.rank <= 20
    ), '[]'::jsonb),
    'feedback', (
      select jsonb_build_object(
               'likes', f.likes, 'dislikes', f.dislikes,
               'like_ratio', round(f.likes::numeric / nullif(f.likes + f.dislikes, 0), 4))
        from feedback f
    ),
    'survey', (
      select jsonb_build_object(
               'responses', s.responses, 'avg_satisfaction', s.avg_satisfaction,
               'avg_ease_of_use', s.avg_ease_of_use, 'nps', s.nps)
        from survey s
    )
  ) into result;
  return result;
end
$$;

-- One metrics object (M in docs/api.md#admin-analytics) from its aggregates.
create function private.analytics_metric(
  p_replies bigint,
  p_completed bigint,
  p_failed bigint,
  p_errors jsonb,
  p_retries bigint,
  p_prompt_tokens bigint,
  p_completion_tokens bigint,
  p_rate_limited bigint,
  p_latency double precision[],
  p_ttft double precision[]
)
returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_build_object(
    'replies', coalesce(p_replies, 0),
    'completed', coalesce(p_completed, 0),
    'failed', coalesce(p_failed, 0),
    'error_rate', round(coalesce(p_failed, 0)::numeric
                        / nullif(coalesce(p_completed, 0) + coalesce(p_failed, 0), 0), 4),
    'errors_by_code', coalesce(p_errors, '{}'::jsonb),
    'retries', coalesce(p_retries, 0),
    'prompt_tokens', coalesce(p_prompt_tokens, 0),
    'completion_tokens', coalesce(p_completion_tokens, 0),
    'rate_limited', coalesce(p_rate_limited, 0),
    'latency_ms', jsonb_build_object(
      'p50', round(p_latency[1]::numeric, 1),
      'p95', round(p_latency[2]::numeric, 1),
      'p99', round(p_latency[3]::numeric, 1)),
    'ttft_ms', jsonb_build_object(
      'p50', round(p_ttft[1]::numeric, 1),
      'p95', round(p_ttft[2]::numeric, 1),
      'p99', round(p_ttft[3]::numeric, 1))
  )
$$;

create function private.marketplace_metrics_recount(
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
set search_path = ''
as $$
declare
  b record;
  result jsonb;
begin
  b := private.analytics_bounds(p_from, p_to, p_tz);

  with agents as (
    select a.id, a.slug, a.name
      from public.marketplace_agents a
     where (p_agent is null or a.slug = p_agent)
       and (p_category is null or a.category = p_category)
       and (p_kind is null or a.kind = p_kind)
  ),
  days as (
    select g::date as day from generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') g
  ),
  replies as (
    select (m.created_at at time zone p_tz)::date as day, d.agent_id, m.status, m.error_code,
           m.latency_ms, m.ttft_ms, m.prompt_tokens, m.completion_tokens,
           coalesce(j.attempts, 0) > 1 as retried
      from public.agent_messages m
      join public.agent_conversations c on c.id = m.conversation_id
      join public.agent_deployments d on d.id = c.deployment_id
      join agents a on a.id = d.agent_id
      left join private.chat_jobs j on j.message_id = m.id
     where m.created_at >= b.t0 and m.created_at < b.t1 and m.role = 'assistant'
  ),
  agg as (
    select grouping(r.agent_id) = 0 as by_agent, grouping(r.day) = 0 as by_day,
           r.agent_id, r.day,
           count(*) as replies,
           count(*) filter (where r.status = 'completed') as completed,
           count(*) filter (where r.status = 'failed') as failed,
           count(*) filter (where r.retried) as retries,
           sum(r.prompt_tokens) as prompt_tokens,
           sum(r.completion_tokens) as completion_tokens,
           percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.latency_ms)
             filter (where r.status = 'completed') as latency,
           percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.ttft_ms)
             filter (where r.status = 'completed') as ttft
      from replies r
     group by grouping sets ((), (r.agent_id), (r.day))
  ),
  errs as (
    select e.by_agent, e.by_day, e.agent_id, e.day, jsonb_object_agg(e.error_code, e.n) as errors
      from (
        select grouping(r.agent_id) = 0 as by_agent, grouping(r.day) = 0 as by_day,
               r.agent_id, r.day, r.error_code, count(*) as n
          from replies r
         where r.status = 'failed'
         group by grouping sets ((r.error_code), (r.agent_id, r.error_code), (r.day, r.error_code))
      ) e
     group by e.by_agent, e.by_day, e.agent_id, e.day
  ),
  limited as (
    select grouping(l.agent_id) = 0 as by_agent, grouping(l.day) = 0 as by_day,
           l.agent_id, l.day, count(*) as n
      from (
        select (t.created_at at time zone p_tz)::date as day, d.agent_id
          from private.telemetry_events t
          join public.agent_deployments d on d.id = t.deployment_id
          join agents a on a.id = d.agent_id
         where t.name = 'agent.chat.rate_limited' and t.created_at >= b.t0 and t.created_at < b.t1
      ) l
     group by grouping sets ((), (l.agent_id), (l.day))
  ),
  overall as (
    select private.analytics_metric(g.replies, g.completed, g.failed, e.errors, g.retries,
                                    g.prompt_tokens, g.completion_tokens, l.n, g.latency, g.ttft) as m
      from (select 1) one
      left join agg g on not g.by_agent and not g.by_day
      left join errs e on not e.by_agent and not e.by_day
      left join limited l on not l.by_agent and not l.by_day
  ),
  per_agent as (
    select a.id, a.slug, a.name,
           private.analytics_metric(g.replies, g.completed, g.failed, e.errors, g.retries,
                                    g.prompt_tokens, g.completion_tokens, l.n, g.latency, g.ttft) as m
      from agents a
      left join agg g on g.by_agent and g.agent_id = a.id
      left join errs e on e.by_agent and e.agent_id = a.id
      left join limited l on l.by_agent and l.agent_id = a.id
     where g.replies is not null or l.n is not null
  ),
  per_day as (
    select ds.day,
           private.analytics_metric(g.replies, g.completed, g.failed, e.errors, g.retries,
                                    g.prompt_tokens, g.completion_tokens, l.n, g.latency, g.ttft) as m
      from days ds
      left join agg g on g.by_day and g.day = ds.day
      left join errs e on e.by_day and e.day = ds.day
      left join limited l on l.by_day and l.day = ds.day
  )
  select jsonb_build_object(
    'range', jsonb_build_object('from', p_from, 'to', p_to, 'tz', p_tz),
    'filters', jsonb_build_object('agent', p_agent, 'category', p_category, 'kind', p_kind),
    'overall', (select m from overall),
    'agents', coalesce((
      select jsonb_agg(jsonb_build_object('agent_id', pa.id, 'slug', pa.slug, 'name', pa.name) || pa.m
                       order by (pa.m ->> 'replies')::bigint desc, pa.slug)
        from per_agent pa
    ), '[]'::jsonb),
    'days', (
      select jsonb_agg(jsonb_build_object('day', pd.day) || pd.m order by pd.day) from per_day pd
    )
  ) into result;
  return result;
end
$$;

revoke all on function private.is_admin() from public, anon, authenticated;
revoke all on function private.require_admin() from public, anon, authenticated;
revoke all on function private.analytics_bounds(date, date, text) from public, anon, authenticated;
revoke all on function private.analytics_metric(bigint, bigint, bigint, jsonb, bigint, bigint, bigint, bigint, double precision[], double precision[])
  from public, anon, authenticated;
revoke all on function private.marketplace_stats_recount(date, date, text, text, text, text) from public, anon, authenticated;
revoke all on function private.marketplace_metrics_recount(date, date, text, text, text, text) from public, anon, authenticated;

grant execute on function private.is_admin() to anon, authenticated, service_role;
grant execute on function private.require_admin() to service_role;
grant execute on function private.analytics_bounds(date, date, text) to service_role;
grant execute on function private.analytics_metric(bigint, bigint, bigint, jsonb, bigint, bigint, bigint, bigint, double precision[], double precision[])
  to service_role;
grant execute on function private.marketplace_stats_recount(date, date, text, text, text, text) to service_role;
grant execute on function private.marketplace_metrics_recount(date, date, text, text, text, text) to service_role;
