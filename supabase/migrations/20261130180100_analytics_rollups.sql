-- Analytics rollups, kept by triggers in the same transaction as the rows they count, and the
-- admin API functions that read them (docs/api.md#admin-analytics, docs/benchmarks.md).
--
--   private.analytics_hourly        per UTC hour and agent: deployments, conversations and user
--                                   messages created
--   private.analytics_user_hours    per UTC hour, agent and user: the user's messages (unique
--                                   chatting users per day / agent / range, exactly)
--   private.analytics_replies       one narrow row per assistant reply (created_at, agent, status,
--                                   error code, tokens, latency, TTFT, retried): the metrics and
--                                   their exact percentiles without joining four tables
--   private.analytics_feedback      one narrow row per feedback vote (created_at, agent, rating)
--   private.analytics_conversation_agents
--                                   which agent a conversation belongs to (messages carry only
--                                   their conversation); removed at commit after the
--                                   conversation, so the cascaded deletes of its messages still
--                                   find it
--
-- A day in the caller's time zone is a union of whole UTC hours whenever the zone's midnights in
-- the range fall on whole UTC hours (every zone with whole-hour offsets); for the others
-- (India's +05:30, Nepal's +05:45, …) the stats are recounted from the tables
-- (private.marketplace_stats_recount). The metrics read analytics_replies in every zone.
-- Rows written with triggers disabled (a bulk load, the benchmark fixture) are counted again by
-- private.analytics_rebuild(). tests/integration/test_analytics_rollups.py proves rollups ==
-- recount after inserts, updates and deletes.

create table private.analytics_hourly (
  hour timestamptz not null,
  agent_id uuid not null,
  deployments integer not null default 0,
  conversations integer not null default 0,
  user_messages integer not null default 0,
  primary key (hour, agent_id)
);

create table private.analytics_user_hours (
  hour timestamptz not null,
  agent_id uuid not null,
  user_id uuid not null,
  messages integer not null default 0,
  primary key (hour, agent_id, user_id)
);

create table private.analytics_replies (
  message_id uuid primary key references public.agent_messages (id) on delete cascade on update cascade,
  created_at timestamptz not null,
  agent_id uuid not null,
  status text not null,
  error_code text,
  prompt_tokens integer,
  completion_tokens integer,
  latency_ms integer,
  ttft_ms integer,
  retried boolean not null default false
);
create index analytics_replies_created_idx on private.analytics_replies (created_at);

create table private.analytics_feedback (
  feedback_id uuid primary key references public.message_feedback (id) on delete cascade on update cascade,
  created_at timestamptz not null,
  agent_id uuid not null,
  rating text not null
);
create index analytics_feedback_created_idx on private.analytics_feedback (created_at);

create table private.analytics_conversation_agents (
  conversation_id uuid primary key,
  agent_id uuid not null
);

do $$
declare
  t text;
begin
  foreach t in array array['analytics_hourly', 'analytics_user_hours', 'analytics_replies',
                           'analytics_feedback', 'analytics_conversation_agents'] loop
    execute format('alter table private.%I enable row level security', t);
    execute format('revoke all on table private.%I from public, anon, authenticated', t);
    execute format('grant all on table private.%I to service_role', t);
  end loop;
end
$$;

-- Adding to the hourly rollups (negative deltas subtract); rows that reach zero go away.
create function private.analytics_add_hourly(
  p_at timestamptz, p_agent uuid, p_deployments integer, p_conversations integer,
  p_user_messages integer
)
returns void
language sql
set search_path = ''
as $$
  insert into private.analytics_hourly as h (hour, agent_id, deployments, conversations, user_messages)
  values (date_trunc('hour', p_at, 'UTC'), p_agent, p_deployments, p_conversations, p_user_messages)
  on conflict (hour, agent_id) do update
    set deployments = h.deployments + excluded.deployments,
        conversations = h.conversations + excluded.conversations,
        user_messages = h.user_messages + excluded.user_messages
$$;

create function private.analytics_add_user_hour(p_at timestamptz, p_agent uuid, p_user uuid, p_delta integer)
returns void
language plpgsql
set search_path = ''
as $$
declare
  left_over integer;
begin
  insert into private.analytics_user_hours as u (hour, agent_id, user_id, messages)
  values (date_trunc('hour', p_at, 'UTC'), p_agent, p_user, p_delta)
  on conflict (hour, agent_id, user_id) do update set messages = u.messages + excluded.messages
  returning messages into left_over;
  if left_over <= 0 then
    delete from private.analytics_user_hours u
     where u.hour = date_trunc('hour', p_at, 'UTC') and u.agent_id = p_agent and u.user_id = p_user;
  end if;
end
$$;

create function private.analytics_deployments_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op in ('DELETE', 'UPDATE') then
    perform private.analytics_add_hourly(old.created_at, old.agent_id, -1, 0, 0);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    perform private.analytics_add_hourly(new.created_at, new.agent_id, 1, 0, 0);
  end if;
  return null;
end
$$;

create trigger agent_deployments_analytics
  after insert or delete or update of created_at, agent_id on public.agent_deployments
  for each row execute function private.analytics_deployments_changed();

create function private.analytics_conversations_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  agent uuid;
begin
  if tg_op = 'INSERT' then
    select d.agent_id into agent from public.agent_deployments d where d.id = new.deployment_id;
    insert into private.analytics_conversation_agents (conversation_id, agent_id)
    values (new.id, agent)
    on conflict (conversation_id) do update set agent_id = excluded.agent_id;
    perform private.analytics_add_hourly(new.created_at, agent, 0, 1, 0);
  elsif tg_op = 'DELETE' then
    select m.agent_id into agent from private.analytics_conversation_agents m
     where m.conversation_id = old.id;
    if agent is not null then
      perform private.analytics_add_hourly(old.created_at, agent, 0, -1, 0);
    end if;
  elsif old.created_at is distinct from new.created_at then
    select m.agent_id into agent from private.analytics_conversation_agents m
     where m.conversation_id = new.id;
    perform private.analytics_add_hourly(old.created_at, agent, 0, -1, 0);
    perform private.analytics_add_hourly(new.created_at, agent, 0, 1, 0);
  end if;
  return null;
end
$$;

create trigger agent_conversations_analytics
  after insert or delete or update of created_at on public.agent_conversations
  for each row execute function private.analytics_conversations_changed();

-- At commit, after the cascaded deletes of the conversation's messages have used it.
create function private.analytics_conversation_gone()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from private.analytics_conversation_agents m
   where m.conversation_id = old.id
     and not exists (select 1 from public.agent_conversations c where c.id = old.id);
  return null;
end
$$;

create constraint trigger agent_conversations_analytics_gone
  after delete on public.agent_conversations
  deferrable initially deferred
  for each row execute function private.analytics_conversation_gone();

create function private.analytics_messages_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  agent uuid;
  conv uuid := case when tg_op = 'DELETE' then old.conversation_id else new.conversation_id end;
begin
  select m.agent_id into agent from private.analytics_conversation_agents m
   where m.conversation_id = conv;
  if agent is null then
    return null;
  end if;
  if tg_op in ('DELETE', 'UPDATE') and old.role = 'user' then
    perform private.analytics_add_hourly(old.created_at, agent, 0, 0, -1);
    perform private.analytics_add_user_hour(old.created_at, agent, old.user_id, -1);
  end if;
  if tg_op in ('INSERT', 'UPDATE') and new.role = 'user' then
    perform private.analytics_add_hourly(new.created_at, agent, 0, 0, 1);
    perform private.analytics_add_user_hour(new.created_at, agent, new.user_id, 1);
  end if;
  -- Replies: their narrow row (deleted with the message by its foreign key).
  if tg_op = 'INSERT' and new.role = 'assistant' then
    insert into private.analytics_replies (message_id, created_at, agent_id, status, error_code,
                                           prompt_tokens, completion_tokens, latency_ms, ttft_ms)
    values (new.id, new.created_at, agent, new.status, new.error_code, new.prompt_tokens,
            new.completion_tokens, new.latency_ms, new.ttft_ms);
  elsif tg_op = 'UPDATE' and new.role = 'assistant' then
    update private.analytics_replies r
       set created_at = new.created_at, status = new.status, error_code = new.error_code,
           prompt_tokens = new.prompt_tokens, completion_tokens = new.completion_tokens,
           latency_ms = new.latency_ms, ttft_ms = new.ttft_ms
     where r.message_id = new.id;
  end if;
  return null;
end
$$;

-- Not on content: the worker's appends never fire it.
create trigger agent_messages_analytics
  after insert or delete
     or update of created_at, role, status, error_code, prompt_tokens, completion_tokens,
                  latency_ms, ttft_ms, user_id
  on public.agent_messages
  for each row execute function private.analytics_messages_changed();

create function private.analytics_jobs_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update private.analytics_replies r
     set retried = new.attempts > 1
   where r.message_id = new.message_id and r.retried is distinct from (new.attempts > 1);
  return null;
end
$$;

create trigger chat_jobs_analytics
  after insert or update of attempts on private.chat_jobs
  for each row execute function private.analytics_jobs_changed();

create function private.analytics_feedback_changed()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  agent uuid;
begin
  if tg_op = 'INSERT' then
    select ca.agent_id into agent
      from public.agent_messages m
      join private.analytics_conversation_agents ca on ca.conversation_id = m.conversation_id
     where m.id = new.message_id;
    if agent is not null then
      insert into private.analytics_feedback (feedback_id, created_at, agent_id, rating)
      values (new.id, new.created_at, agent, new.rating);
    end if;
  else
    update private.analytics_feedback f
       set rating = new.rating, created_at = new.created_at
     where f.feedback_id = new.id;
  end if;
  return null;
end
$$;

create trigger message_feedback_analytics
  after insert or update of rating, created_at on public.message_feedback
  for each row execute function private.analytics_feedback_changed();

-- Count everything again from the tables (after a load with triggers disabled).
create function private.analytics_rebuild()
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  lock table public.agent_deployments, public.agent_conversations, public.agent_messages,
             public.message_feedback, private.chat_jobs in share mode;
  truncate private.analytics_hourly, private.analytics_user_hours, private.analytics_replies,
           private.analytics_feedback, private.analytics_conversation_agents;
  insert into private.analytics_conversation_agents (conversation_id, agent_id)
  select c.id, d.agent_id
    from public.agent_conversations c join public.agent_deployments d on d.id = c.deployment_id;
  insert into private.analytics_hourly (hour, agent_id, deployments, conversations, user_messages)
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

-- Whether every midnight of the range in p_tz falls on a whole UTC hour (then a day is a union of
-- the hourly rollups' hours).
create function private.analytics_hour_aligned(p_from date, p_to date, p_tz text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select bool_and(extract(epoch from (g::timestamp at time zone p_tz))::bigint % 3600 = 0)
    from generate_series(p_from::timestamp, (p_to + 1)::timestamp, interval '1 day') g
$$;

create function private.marketplace_stats_rollup(
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
set work_mem = '64MB'
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
  -- The range's hours and the day each falls on: one time zone conversion per hour, not per row.
  hours as (
    select h as hour, (h at time zone p_tz)::date as day
      from generate_series(b.t0, b.t1 - interval '1 hour', interval '1 hour') h
  ),
  hourly as (
    select hs.day, h.agent_id, h.deployments, h.conversations, h.user_messages
      from private.analytics_hourly h
      join hours hs on hs.hour = h.hour
     where h.hour >= b.t0 and h.hour < b.t1
       and (not filtered or h.agent_id in (select id from agents))
  ),
  presence as (
    select hs.day, u.agent_id, u.user_id
      from private.analytics_user_hours u
      join hours hs on hs.hour = u.hour
     where u.hour >= b.t0 and u.hour < b.t1
       and (not filtered or u.agent_id in (select id from agents))
  ),
  per_day as (
    select day, sum(deployments) as deployments, sum(conversations) as conversations,
           sum(user_messages) as user_messages
      from hourly group by day
  ),
  users_day as (
    select day, count(*) as users from (select distinct day, user_id from presence) x group by day
  ),
  per_agent as (
    select agent_id, sum(deployments) as deployments, sum(conversations) as conversations,
           sum(user_messages) as messages
      from hourly group by agent_id
  ),
  users_agent as (
    select agent_id, count(*) as users
      from (select distinct agent_id, user_id from presence) x group by agent_id
  ),
  popular as (
    select row_number() over (
             order by pa.deployments desc, pa.conversations desc, pa.messages desc,
                      coalesce(ua.users, 0) desc, a.slug
           ) as rank,
           a.id as agent_id, a.slug, a.name,
           pa.deployments, pa.conversations, pa.messages, coalesce(ua.users, 0) as unique_users
      from per_agent pa
      join agents a on a.id = pa.agent_id
      left join users_agent ua on ua.agent_id = pa.agent_id
     where pa.deployments + pa.conversations + pa.messages > 0
  ),
  feedback as (
    select count(*) filter (where f.rating = 'like') as likes,
           count(*) filter (where f.rating = 'dislike') as dislikes
      from private.analytics_feedback f
      join agents a on a.id = f.agent_id
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
      'deployments', (select coalesce(sum(deployments), 0) from per_day),
      'conversations', (select coalesce(sum(conversations), 0) from per_day),
      'user_messages', (select coalesce(sum(user_messages), 0) from per_day),
      'unique_users', (select count(*) from (select distinct user_id from presence) x)
    ),
    'days', (
      select jsonb_agg(jsonb_build_object(
               'day', g.day,
               'deployments', coalesce(pd.deployments, 0),
               'conversations', coalesce(pd.conversations, 0),
               'user_messages', coalesce(pd.user_messages, 0),
               'unique_users', coalesce(ud.users, 0)
             ) order by g.day)
        from days g
        left join per_day pd on pd.day = g.day
        left join users_day ud on ud.day = g.day
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

create function private.marketplace_metrics_rollup(
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
set work_mem = '64MB'
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
  -- Not materialized: the aggregates read the table directly, the errors only its failed rows.
  replies as not materialized (
    select (r.created_at at time zone p_tz)::date as day, r.agent_id, r.status, r.error_code,
           r.latency_ms, r.ttft_ms, r.prompt_tokens, r.completion_tokens, r.retried
      from private.analytics_replies r
     where r.created_at >= b.t0 and r.created_at < b.t1
       and (not filtered or r.agent_id in (select id from agents))
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

-- The admin API: admins only (AMADM), then the rollups (or, for a zone whose midnights are not
-- on whole UTC hours, the recount).
create function private.marketplace_stats(
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
begin
  perform private.require_admin();
  perform private.analytics_bounds(p_from, p_to, p_tz);
  if private.analytics_hour_aligned(p_from, p_to, p_tz) then
    return private.marketplace_stats_rollup(p_from, p_to, p_tz, p_agent, p_category, p_kind);
  end if;
  return private.marketplace_stats_recount(p_from, p_to, p_tz, p_agent, p_category, p_kind);
end
$$;

create function private.marketplace_metrics(
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
begin
  perform private.require_admin();
  return private.marketplace_metrics_rollup(p_from, p_to, p_tz, p_agent, p_category, p_kind);
end
$$;

revoke all on function private.analytics_add_hourly(timestamptz, uuid, integer, integer, integer) from public, anon, authenticated;
revoke all on function private.analytics_add_user_hour(timestamptz, uuid, uuid, integer) from public, anon, authenticated;
revoke all on function private.analytics_deployments_changed() from public, anon, authenticated;
revoke all on function private.analytics_conversations_changed() from public, anon, authenticated;
revoke all on function private.analytics_conversation_gone() from public, anon, authenticated;
revoke all on function private.analytics_messages_changed() from public, anon, authenticated;
revoke all on function private.analytics_jobs_changed() from public, anon, authenticated;
revoke all on function private.analytics_feedback_changed() from public, anon, authenticated;
revoke all on function private.analytics_rebuild() from public, anon, authenticated;
revoke all on function private.analytics_hour_aligned(date, date, text) from public, anon, authenticated;
revoke all on function private.marketplace_stats_rollup(date, date, text, text, text, text) from public, anon, authenticated;
revoke all on function private.marketplace_metrics_rollup(date, date, text, text, text, text) from public, anon, authenticated;
revoke all on function private.marketplace_stats(date, date, text, text, text, text) from public, anon, authenticated;
revoke all on function private.marketplace_metrics(date, date, text, text, text, text) from public, anon, authenticated;

grant execute on function private.analytics_add_hourly(timestamptz, uuid, integer, integer, integer) to service_role;
grant execute on function private.analytics_add_user_hour(timestamptz, uuid, uuid, integer) to service_role;
grant execute on function private.analytics_deployments_changed() to service_role;
grant execute on function private.analytics_conversations_changed() to service_role;
grant execute on function private.analytics_conversation_gone() to service_role;
grant execute on function private.analytics_messages_changed() to service_role;
grant execute on function private.analytics_jobs_changed() to service_role;
grant execute on function private.analytics_feedback_changed() to service_role;
grant execute on function private.analytics_rebuild() to service_role;
grant execute on function private.analytics_hour_aligned(date, date, text) to service_role;
grant execute on function private.marketplace_stats_rollup(date, date, text, text, text, text) to service_role;
grant execute on function private.marketplace_metrics_rollup(date, date, text, text, text, text) to service_role;
grant execute on function private.marketplace_stats(date, date, text, text, text, text) to authenticated, service_role;
grant execute on function private.marketplace_metrics(date, date, text, text, text, text) to authenticated, service_role;

-- What exists already (a database migrated with activity in it) is counted now; from here on the
-- triggers keep the rollups.
select private.analytics_rebuild();
