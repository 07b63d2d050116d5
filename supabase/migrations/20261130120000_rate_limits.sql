-- Rate limits and quotas (docs/api.md#limits): GCRA counters in Postgres, so they hold across any
-- number of function instances.
--
--   * private.rate_limits holds one row per key ("chat:<user>", "deployment:<id>", …): its
--     theoretical arrival time (TAT). A limit of N per period admits a burst of N, then one request
--     every period/N. One statement takes a request (INSERT … ON CONFLICT DO UPDATE … WHERE it fits):
--     no read-then-write race, and a refused request changes nothing.
--   * A row whose TAT has passed holds no state (the full burst is available again); takes delete a
--     few of those now and then, so stale keys go without a cron job. The table is UNLOGGED (see
--     below).
--   * The limits themselves are the operator's settings, stored by `agentmarket migrate` in
--     private.app_settings (like the deployment cap): the functions read them there, never from
--     their caller.
--   * A refusal raises one of our SQLSTATEs with a JSON DETAIL the API turns into 429 headers:
--     AMRLM rate limited, AMINF too many replies in flight, AMBUD platform token budget spent,
--     AMDPT too many deployments in total (409).

alter table private.app_settings
  add column chat_per_minute integer not null default 20
    constraint app_settings_chat_per_minute_range check (chat_per_minute between 1 and 100000),
  add column deploy_per_minute integer not null default 10
    constraint app_settings_deploy_per_minute_range check (deploy_per_minute between 1 and 100000),
  add column conversations_per_minute integer not null default 30
    constraint app_settings_conversations_per_minute_range
      check (conversations_per_minute between 1 and 100000),
  add column max_in_flight_per_user integer not null default 4
    constraint app_settings_max_in_flight_range check (max_in_flight_per_user between 1 and 10000),
  add column platform_tokens_per_day bigint not null default 100000
    constraint app_settings_platform_tokens_nonnegative check (platform_tokens_per_day >= 0),
  add column max_deployments_per_user integer not null default 25
    constraint app_settings_max_deployments_range check (max_deployments_per_user between 1 and 100000);

-- UNLOGGED: the state is short-lived (a minute's worth), so it is kept out of the WAL that every
-- chat send waits on at COMMIT. A crash or a failover forgets it, which only gives every key its
-- full burst again. No index but the key, so a take is a HOT update of one row.
create unlogged table private.rate_limits (
  key text primary key
    constraint rate_limits_key_length check (length(key) between 1 and 200),
  -- The theoretical arrival time: when the key's quota is whole again.
  tat timestamptz not null
);

comment on table private.rate_limits is
  'GCRA state, one row per limited key. A row whose tat has passed is stale and may be deleted.';

alter table private.rate_limits enable row level security;
revoke all on table private.rate_limits from public, anon, authenticated;
grant all on table private.rate_limits to service_role;

-- Tokens spent on the platform's model key, per user and UTC day (own keys are not counted).
create table private.platform_token_usage (
  user_id uuid not null references auth.users (id) on delete cascade,
  day date not null,
  tokens bigint not null default 0 constraint platform_token_usage_tokens_nonnegative check (tokens >= 0),
  primary key (user_id, day)
);

comment on table private.platform_token_usage is
  'Prompt + completion tokens answered with the platform key, per user and UTC day.';

alter table private.platform_token_usage enable row level security;
revoke all on table private.platform_token_usage from public, anon, authenticated;
grant all on table private.platform_token_usage to service_role;

-- Replies queued or running, per user (the in-flight cap counts them on every send).
create index agent_messages_user_in_flight_idx on public.agent_messages (user_id)
  where role = 'assistant' and status in ('queued', 'running');

-- The rate_limit_* functions run as their caller: only the API's SECURITY DEFINER functions (and
-- service_role) call them.

-- Take one request from the key's quota: (allowed, remaining, reset_seconds, retry_after).
-- `remaining` is what is left after this request; `reset_seconds` when the quota is whole again;
-- `retry_after` (refused only, ≥ 1) when one more request would fit.
create function private.rate_limit_take(p_key text, p_limit integer, p_period_seconds integer default 60)
returns table (allowed boolean, remaining integer, reset_seconds integer, retry_after integer)
language plpgsql
set search_path = ''
as $$
declare
  now_ timestamptz := clock_timestamp();
  emission interval;
  period interval;
  new_tat timestamptz;
  current_tat timestamptz;
begin
  if p_limit is null or p_limit < 1 or p_period_seconds is null or p_period_seconds < 1 then
    raise exception 'invalid rate limit' using errcode = '22023';
  end if;
  emission := make_interval(secs => p_period_seconds::double precision / p_limit);
  period := make_interval(secs => p_period_seconds);
  insert into private.rate_limits as r (key, tat)
  values (p_key, now_ + emission)
  on conflict (key) do update
     set tat = greatest(r.tat, now_) + emission
   where greatest(r.tat, now_) + emission - now_ <= period
  returning r.tat into new_tat;

  -- Now and then, forget keys whose quota is whole again (they hold no state).
  if random() < 0.01 then
    delete from private.rate_limits s
     where s.key in (select k.key from private.rate_limits k where k.tat < now_
                      limit 500 for update skip locked);
  end if;

  if new_tat is not null then
    return query select true,
      floor(extract(epoch from (period - (new_tat - now_))) / extract(epoch from emission))::integer,
      ceil(extract(epoch from (new_tat - now_)))::integer,
      0;
    return;
  end if;
  select r.tat into current_tat from private.rate_limits r where r.key = p_key;
  new_tat := greatest(coalesce(current_tat, now_), now_) + emission;
  return query select false, 0,
    greatest(ceil(extract(epoch from (new_tat - now_ - period))), 1)::integer,
    greatest(ceil(extract(epoch from (new_tat - now_ - period))), 1)::integer;
end
$$;

-- Where a key stands without taking anything: (remaining, reset_seconds).
create function private.rate_limit_peek(p_key text, p_limit integer, p_period_seconds integer default 60)
returns table (remaining integer, reset_seconds integer)
language sql
stable
set search_path = ''
as $$
  select least(p_limit, floor(extract(epoch from (make_interval(secs => p_period_seconds)
                  - greatest(coalesce(max(r.tat), clock_timestamp()) - clock_timestamp(), interval '0'))))
              / (p_period_seconds::double precision / p_limit))::integer,
         ceil(greatest(extract(epoch from (coalesce(max(r.tat), clock_timestamp()) - clock_timestamp())), 0))::integer
    from private.rate_limits r
   where r.key = p_key
$$;

-- Refuse a request over a limit: SQLSTATE p_errcode, DETAIL a JSON object the API turns into the
-- 429 (or 409) response: the policy's name, its quota and window, and when to retry.
create function private.raise_limit(
  p_errcode text, p_message text, p_policy text, p_limit bigint, p_window integer, p_retry_after integer
)
returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using
    errcode = p_errcode,
    message = p_message,
    detail = json_build_object('policy', p_policy, 'limit', p_limit, 'window', p_window,
                               'retry_after', greatest(coalesce(p_retry_after, 1), 1))::text;
end
$$;

-- Take one request from `p_key` or refuse it (AMRLM). Returns the quota left, for the headers.
create function private.rate_limit_check(p_policy text, p_key text, p_limit integer, p_period_seconds integer default 60)
returns table (remaining integer, reset_seconds integer)
language plpgsql
set search_path = ''
as $$
declare
  taken record;
begin
  select * into taken from private.rate_limit_take(p_key, p_limit, p_period_seconds);
  if not taken.allowed then
    perform private.raise_limit('AMRLM', 'rate limited', p_policy, p_limit, p_period_seconds,
                                taken.retry_after);
  end if;
  return query select taken.remaining, taken.reset_seconds;
end
$$;

revoke all on function private.rate_limit_take(text, integer, integer) from public, anon, authenticated;
revoke all on function private.rate_limit_peek(text, integer, integer) from public, anon, authenticated;
revoke all on function private.raise_limit(text, text, text, bigint, integer, integer) from public, anon, authenticated;
revoke all on function private.rate_limit_check(text, text, integer, integer) from public, anon, authenticated;
grant execute on function private.rate_limit_take(text, integer, integer) to service_role;
grant execute on function private.rate_limit_peek(text, integer, integer) to service_role;
grant execute on function private.raise_limit(text, text, text, bigint, integer, integer) to service_role;
grant execute on function private.rate_limit_check(text, text, integer, integer) to service_role;
