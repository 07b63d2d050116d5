-- Unique chatting users from presence bitmaps (docs/api.md#admin-analytics): the stats read a
-- few thousand small bitmaps instead of counting distinct (hour, agent, user) rows.
--
--   private.analytics_user_keys       a dense number per chatting user (user_key: 0, 1, 2, …),
--                                     given when the user first appears in
--                                     analytics_user_hours and never reused (a rebuild numbers
--                                     everyone again)
--   private.analytics_presence_hours  per UTC hour, all agents: bit user_key is set iff the user
--                                     has an analytics_user_hours row in that hour
--   private.analytics_presence_days   per UTC day and agent: bit user_key is set iff the user has
--                                     an analytics_user_hours row that UTC day for that agent
--
-- A bitmap is a varbit whose bit k (position 0 = leftmost, as get_bit/set_bit count) is user k.
-- Bitmaps only grow (zeros are appended to reach a new user's bit), so they differ in length;
-- a reader pads them with zeros on the right to the widest (max(user_key) + 1) and unions them
-- with bit_or, then counts with bit_count: exact, not an estimate. Cells whose bitmap becomes
-- all zeros are deleted.
--
-- They are kept by the existing trigger path, in the same transaction as the rows:
-- private.analytics_add_user_hour sets the bits when a user's (hour, agent) row appears and,
-- when one disappears (its count reached zero: messages or conversations deleted), clears the
-- hour cell's bit unless the user still has a row in that hour for another agent, and the day
-- cell's bit unless the user still has a row that UTC day for that agent. The cell is locked
-- before that check, so a concurrent writer that adds the user back waits and sets the bit again.
--
-- private.marketplace_stats_rollup reads them when no agent/category/kind filter is given:
-- unique users per day in the caller's (hour-aligned) zone = bit_or of the day's UTC hour cells;
-- over the range = bit_or of those; per agent = bit_or of the agent's UTC day cells wholly inside
-- the range, plus the users of its analytics_user_hours rows in the partial UTC days at the
-- range's ends whose bit is not already set. With a filter it counts analytics_user_hours rows
-- (few, for a few agents) as before.
--
-- private.analytics_rebuild() is now analytics_rebuild_base() (the rollups, as before) and
-- analytics_rebuild_presence() (keys and bitmaps, set-based, from analytics_user_hours).

create table private.analytics_user_keys (
  user_id uuid primary key,
  user_key integer generated always as identity (minvalue 0 start with 0) unique
);

create table private.analytics_presence_hours (
  hour timestamptz primary key,
  users varbit not null
);

create table private.analytics_presence_days (
  day date not null,
  agent_id uuid not null,
  users varbit not null,
  primary key (day, agent_id)
);

do $$
declare
  t text;
begin
  foreach t in array array['analytics_user_keys', 'analytics_presence_hours',
                           'analytics_presence_days'] loop
    execute format('alter table private.%I enable row level security', t);
    execute format('revoke all on table private.%I from public, anon, authenticated', t);
    execute format('grant all on table private.%I to service_role', t);
  end loop;
end
$$;

-- The user's number, given on first use. Looked up first, so the identity is only drawn for a
-- new user (a conflicting insert would waste a number and leave a gap in the bitmaps).
create function private.analytics_user_key(p_user uuid)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  k integer;
begin
  select uk.user_key into k from private.analytics_user_keys uk where uk.user_id = p_user;
  if k is null then
    insert into private.analytics_user_keys (user_id) values (p_user)
    on conflict (user_id) do nothing
    returning user_key into k;
    if k is null then
      -- Another transaction numbered the user first (the insert waited for it to commit).
      select uk.user_key into k from private.analytics_user_keys uk where uk.user_id = p_user;
    end if;
  end if;
  return k;
end
$$;

-- The user's (hour, agent) row appeared: set the user's bit in the hour's and the day's cell.
-- A bit already set is not written again, but the cell is still locked (ON CONFLICT DO UPDATE
-- locks the row whatever its WHERE says), which orders us after a concurrent clear.
create function private.analytics_presence_add(p_hour timestamptz, p_agent uuid, p_user uuid)
returns void
language plpgsql
set search_path = ''
as $$
declare
  k integer := private.analytics_user_key(p_user);
begin
  -- A new cell is k zeros and a one; a shorter one grows with zeros to reach bit k.
  insert into private.analytics_presence_hours as p (hour, users)
  values (p_hour, set_bit(repeat('0', k + 1)::varbit, k, 1))
  on conflict (hour) do update
    set users = set_bit(case when length(p.users) > k then p.users
                             else p.users || repeat('0', k + 1 - length(p.users))::varbit end, k, 1)
   where length(p.users) <= k or get_bit(p.users, k) = 0;
  insert into private.analytics_presence_days as p (day, agent_id, users)
  values ((p_hour at time zone 'UTC')::date, p_agent, set_bit(repeat('0', k + 1)::varbit, k, 1))
  on conflict (day, agent_id) do update
    set users = set_bit(case when length(p.users) > k then p.users
                             else p.users || repeat('0', k + 1 - length(p.users))::varbit end, k, 1)
   where length(p.users) <= k or get_bit(p.users, k) = 0;
end
$$;

-- The user's (hour, agent) row disappeared: clear the user's bit in the hour's cell unless the
-- user still has a row in that hour (another agent), and in the day's cell unless the user still
-- has a row that UTC day for that agent. Each cell is locked before the check (see the header).
create function private.analytics_presence_remove(p_hour timestamptz, p_agent uuid, p_user uuid)
returns void
language plpgsql
set search_path = ''
as $$
declare
  k integer;
  d date := (p_hour at time zone 'UTC')::date;
  left_over bigint;
begin
  select uk.user_key into k from private.analytics_user_keys uk where uk.user_id = p_user;
  if k is null then
    return;
  end if;

  perform 1 from private.analytics_presence_hours p where p.hour = p_hour for update;
  if found and not exists (
    select 1 from private.analytics_user_hours u where u.hour = p_hour and u.user_id = p_user
  ) then
    update private.analytics_presence_hours p
       set users = set_bit(p.users, k, 0)
     where p.hour = p_hour and length(p.users) > k
    returning bit_count(p.users) into left_over;
    if left_over = 0 then
      delete from private.analytics_presence_hours p where p.hour = p_hour;
    end if;
  end if;

  perform 1 from private.analytics_presence_days p where p.day = d and p.agent_id = p_agent for update;
  if found and not exists (
    -- The day's 24 hours probed by the whole key, not the day's rows scanned.
    select 1 from private.analytics_user_hours u
     where u.hour = any (array(select generate_series(d::timestamp at time zone 'UTC',
                                                      (d + 1)::timestamp at time zone 'UTC' - interval '1 hour',
                                                      interval '1 hour')))
       and u.agent_id = p_agent and u.user_id = p_user
  ) then
    update private.analytics_presence_days p
       set users = set_bit(p.users, k, 0)
     where p.day = d and p.agent_id = p_agent and length(p.users) > k
    returning bit_count(p.users) into left_over;
    if left_over = 0 then
      delete from private.analytics_presence_days p where p.day = d and p.agent_id = p_agent;
    end if;
  end if;
end
$$;

-- As before (20261130180100), plus the presence bitmaps when a row appears or disappears.
create or replace function private.analytics_add_user_hour(p_at timestamptz, p_agent uuid, p_user uuid, p_delta integer)
returns void
language plpgsql
set search_path = ''
as $$
declare
  h timestamptz := date_trunc('hour', p_at, 'UTC');
  left_over integer;
begin
  insert into private.analytics_user_hours as u (hour, agent_id, user_id, messages)
  values (h, p_agent, p_user, p_delta)
  on conflict (hour, agent_id, user_id) do update set messages = u.messages + excluded.messages
  returning messages into left_over;
  if left_over <= 0 then
    delete from private.analytics_user_hours u
     where u.hour = h and u.agent_id = p_agent and u.user_id = p_user;
    perform private.analytics_presence_remove(h, p_agent, p_user);
  elsif left_over - p_delta <= 0 then
    -- Rows live only while positive: it was not there before this message.
    perform private.analytics_presence_add(h, p_agent, p_user);
  end if;
end
$$;

-- The body of analytics_rebuild() until now: every rollup but the presence bitmaps.
create function private.analytics_rebuild_base()
returns void
language plpgsql
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

-- Number the users of analytics_user_hours again and build every cell from its rows, one
-- statement each: a cell's bitmap is written as text ('0' for each key skipped since the
-- previous one, then '1'), so it costs its own length, not the number of users times the rows.
create function private.analytics_rebuild_presence()
returns void
language plpgsql
set search_path = ''
as $$
begin
  lock table private.analytics_user_hours in share mode;
  truncate private.analytics_user_keys, private.analytics_presence_hours,
           private.analytics_presence_days restart identity;
  insert into private.analytics_user_keys (user_id)
  select u.user_id from private.analytics_user_hours u group by u.user_id order by u.user_id;
  insert into private.analytics_presence_hours (hour, users)
  select x.hour, string_agg(repeat('0', x.user_key - x.previous - 1) || '1', '' order by x.user_key)::varbit
    from (
      select c.hour, c.user_key, lag(c.user_key, 1, -1) over (partition by c.hour order by c.user_key) as previous
        from (select distinct u.hour, k.user_key
                from private.analytics_user_hours u
                join private.analytics_user_keys k on k.user_id = u.user_id) c
    ) x
   group by x.hour;
  insert into private.analytics_presence_days (day, agent_id, users)
  select x.day, x.agent_id,
         string_agg(repeat('0', x.user_key - x.previous - 1) || '1', '' order by x.user_key)::varbit
    from (
      select c.day, c.agent_id, c.user_key,
             lag(c.user_key, 1, -1) over (partition by c.day, c.agent_id order by c.user_key) as previous
        from (select distinct (u.hour at time zone 'UTC')::date as day, u.agent_id, k.user_key
                from private.analytics_user_hours u
                join private.analytics_user_keys k on k.user_id = u.user_id) c
    ) x
   group by x.day, x.agent_id;
end
$$;

-- Count everything again from the tables (after a load with triggers disabled).
create or replace function private.analytics_rebuild()
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform private.analytics_rebuild_base();
  perform private.analytics_rebuild_presence();
end
$$;

create or replace function private.marketplace_stats_rollup(
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
  -- The bitmaps' common width (every user key is below it) and that many zeros, to pad with.
  width integer := 0;
  zeros varbit := B'';
  -- The UTC days wholly inside [t0, t1): [full_from, full_to), empty when there is none.
  full_from timestamptz;
  full_to timestamptz;
  result jsonb;
begin
  b := private.analytics_bounds(p_from, p_to, p_tz);
  if not filtered then
    select coalesce(max(k.user_key), -1) + 1 into width from private.analytics_user_keys k;
    zeros := repeat('0', width)::varbit;
  end if;
  full_from := date_trunc('day', b.t0, 'UTC');
  if full_from < b.t0 then
    full_from := full_from + interval '24 hours';
  end if;
  full_to := date_trunc('day', b.t1, 'UTC');
  if full_from >= full_to then
    full_from := b.t1;
    full_to := b.t1;
  end if;

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
  -- One pass over the hourly rollup: its sums per hour (for the days) and per agent.
  hourly as (
    select grouping(h.agent_id) = 0 as by_agent, h.hour, h.agent_id,
           sum(h.deployments) as deployments, sum(h.conversations) as conversations,
           sum(h.user_messages) as user_messages
      from private.analytics_hourly h
     where h.hour >= b.t0 and h.hour < b.t1
       and (not filtered or h.agent_id in (select id from agents))
     group by grouping sets ((h.hour), (h.agent_id))
  ),
  -- Filtered: the users' rows of the selected agents, counted distinct.
  presence as (
    select hs.day, u.agent_id, u.user_id
      from private.analytics_user_hours u
      join hours hs on hs.hour = u.hour
     where filtered and u.hour >= b.t0 and u.hour < b.t1
       and u.agent_id in (select id from agents)
  ),
  -- Unfiltered: the bitmaps. A day's users = the union of its UTC hours' cells.
  day_bits as (
    select hs.day, bit_or(p.users || substring(zeros from 1 for width - length(p.users))) as users
      from private.analytics_presence_hours p
      join hours hs on hs.hour = p.hour
     where not filtered and p.hour >= b.t0 and p.hour < b.t1
     group by hs.day
  ),
  -- An agent's users = the union of its cells for the whole UTC days in range, plus the users of
  -- its rows in the partial UTC days at the range's ends whose bit that union lacks.
  agent_bits as (
    select d.agent_id, bit_or(d.users || substring(zeros from 1 for width - length(d.users))) as users
      from private.analytics_presence_days d
     where not filtered
       and d.day >= (full_from at time zone 'UTC')::date and d.day < (full_to at time zone 'UTC')::date
     group by d.agent_id
  ),
  edge_users as (
    select distinct u.agent_id, k.user_key
      from private.analytics_user_hours u
      join private.analytics_user_keys k on k.user_id = u.user_id
     where not filtered
       and ((u.hour >= b.t0 and u.hour < full_from) or (u.hour >= full_to and u.hour < b.t1))
  ),
  edge_new as (
    select e.agent_id, count(*) as users
      from edge_users e
      left join agent_bits ab on ab.agent_id = e.agent_id
     where ab.users is null or get_bit(ab.users, e.user_key) = 0
     group by e.agent_id
  ),
  per_day as (
    select hs.day, sum(h.deployments)::bigint as deployments,
           sum(h.conversations)::bigint as conversations,
           sum(h.user_messages)::bigint as user_messages
      from hourly h
      join hours hs on hs.hour = h.hour
     where not h.by_agent
     group by hs.day
  ),
  users_day as (
    select day, count(*) as users from (select distinct day, user_id from presence) x group by day
    union all
    select day, bit_count(users) from day_bits
  ),
  per_agent as (
    select agent_id, deployments, conversations, user_messages as messages
      from hourly where by_agent
  ),
  users_agent as (
    select agent_id, count(*) as users
      from (select distinct agent_id, user_id from presence) x group by agent_id
    union all
    select coalesce(ab.agent_id, en.agent_id), coalesce(bit_count(ab.users), 0) + coalesce(en.users, 0)
      from agent_bits ab
      full join edge_new en on en.agent_id = ab.agent_id
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
     where f.created_at >= b.t0 and f.created_at < b.t1
       and (not filtered or f.agent_id in (select id from agents))
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
      'unique_users', case
        when filtered then (select count(*) from (select distinct user_id from presence) x)
        else (select coalesce(bit_count(bit_or(users)), 0) from day_bits)
      end
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

revoke all on function private.analytics_user_key(uuid) from public, anon, authenticated;
revoke all on function private.analytics_presence_add(timestamptz, uuid, uuid) from public, anon, authenticated;
revoke all on function private.analytics_presence_remove(timestamptz, uuid, uuid) from public, anon, authenticated;
revoke all on function private.analytics_rebuild_base() from public, anon, authenticated;
revoke all on function private.analytics_rebuild_presence() from public, anon, authenticated;

grant execute on function private.analytics_user_key(uuid) to service_role;
grant execute on function private.analytics_presence_add(timestamptz, uuid, uuid) to service_role;
grant execute on function private.analytics_presence_remove(timestamptz, uuid, uuid) to service_role;
grant execute on function private.analytics_rebuild_base() to service_role;
grant execute on function private.analytics_rebuild_presence() to service_role;

-- What exists already is counted now; from here on the triggers keep the bitmaps.
select private.analytics_rebuild_presence();
