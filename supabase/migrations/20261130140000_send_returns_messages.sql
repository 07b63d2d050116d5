-- A chat send answers with its two messages (docs/architecture.md#the-path-of-a-chat-message):
-- private.send_chat_message returns one row per message (the user's first, then the reply), each
-- with the exchange's columns (conversation, created, the quota for the RateLimit headers), so the
-- API reads nothing back after it. A repeated client_message_id returns the two messages as they
-- stand now (the reply may have progressed), uncounted, as before.
--
-- p_reply_id (optional): the id of the new reply, chosen by the API so that it can subscribe to
-- the reply's stream before the send (and its commit) happens; null lets the database choose.
--
-- p_mode (optional: blocking, streaming or async): a new message's product event,
-- agent.chat.message.sent, is written in the send's own transaction (like the worker's reply
-- events in the transaction that finishes the reply), not in a separate batch later; a repeat
-- records none, a null mode none either.
--
-- Everything else is the body of 20261130120100_chat_limits.sql unchanged: the same checks in
-- the same order, the same SQLSTATEs (AMNF2, AMPAU, AMCFG, AMINF, AMBUD, AMRLM, AMNF3), the same
-- quotas taken, nothing stored when refused.

drop function private.send_chat_message(uuid, uuid, text, text, text);

create function private.send_chat_message(
  p_deployment_id uuid,
  p_conversation_id uuid,
  p_content text,
  p_client_message_id text,
  p_trace_id text,
  p_reply_id uuid default null,
  p_mode text default null
)
returns table (
  conversation_id uuid,
  created boolean,
  quota_policy text,
  quota_limit integer,
  quota_remaining integer,
  quota_reset integer,
  id uuid,
  role text,
  content text,
  status text,
  error_code text,
  error_message text,
  model text,
  prompt_tokens integer,
  completion_tokens integer,
  ttft_ms integer,
  latency_ms integer,
  truncated boolean,
  created_at timestamptz,
  completed_at timestamptz
)
language plpgsql
security definer
set search_path = ''
as $$
-- The result's columns share names with agent_messages' columns: a bare name is the column.
#variable_conflict use_column
declare
  uid uuid := private.require_uid();
  cfg private.app_settings;
  dep public.agent_deployments;
  agent_limit integer;
  agent_model text;
  conv uuid := p_conversation_id;
  existing record;
  user_quota record;
  dep_quota record;
  user_msg uuid;
  reply uuid;
  job bigint;
  in_flight integer;
  used bigint;
  quota record;
begin
  if p_mode is not null and p_mode not in ('blocking', 'streaming', 'async') then
    raise exception 'mode must be blocking, streaming or async' using errcode = '22023';
  end if;
  select * into dep
    from public.agent_deployments d
   where d.id = p_deployment_id and d.user_id = uid and d.deleted_at is null;
  if not found then
    raise exception 'deployment not found' using errcode = 'AMNF2';
  end if;
  select * into cfg from private.app_settings;

  if p_client_message_id is not null then
    -- Serialise retries of the same send; a repeat returns the original exchange, uncounted.
    perform pg_advisory_xact_lock(hashtextextended('agentmarket.send:' || uid::text || ':' || p_client_message_id, 0));
    select m.conversation_id as conv_id, m.id as user_id_, r.id as reply_id into existing
      from public.agent_messages m
      join public.agent_conversations c on c.id = m.conversation_id
      left join public.agent_messages r on r.reply_to = m.id
     where m.user_id = uid and m.client_message_id = p_client_message_id and m.role = 'user'
       and c.deployment_id = p_deployment_id
     limit 1;
    if found then
      -- The two messages as they stand now (read after the lock: the reply may have moved on).
      return query
        select existing.conv_id, false, 'chat'::text, cfg.chat_per_minute, q.remaining,
               q.reset_seconds, m.id, m.role, m.content, m.status, m.error_code,
               m.error_message, m.model, m.prompt_tokens, m.completion_tokens, m.ttft_ms,
               m.latency_ms, m.truncated, m.created_at, m.completed_at
          from private.rate_limit_peek('chat:' || uid::text, cfg.chat_per_minute) q
          cross join public.agent_messages m
         where m.id in (existing.user_id_, existing.reply_id)
         order by m.role = 'assistant';
      return;
    end if;
  end if;

  if dep.status = 'paused' then
    raise exception 'deployment paused' using errcode = 'AMPAU';
  elsif dep.status <> 'active' then
    raise exception 'deployment not configured' using errcode = 'AMCFG';
  end if;

  select count(*) into in_flight
    from public.agent_messages m
   where m.user_id = uid and m.role = 'assistant' and m.status in ('queued', 'running');
  if in_flight >= cfg.max_in_flight_per_user then
    -- No way to know when one finishes: a short, honest retry hint.
    perform private.raise_limit('AMINF', 'too many replies in flight', 'in_flight',
                                cfg.max_in_flight_per_user, 0, 2);
  end if;

  if cfg.platform_tokens_per_day > 0 and not exists (
    select 1 from private.deployment_secrets s
     where s.deployment_id = p_deployment_id and s.field = 'openai_api_key'
  ) then
    select u.tokens into used
      from private.platform_token_usage u
     where u.user_id = uid and u.day = (now() at time zone 'utc')::date;
    if coalesce(used, 0) >= cfg.platform_tokens_per_day then
      perform private.raise_limit('AMBUD', 'platform token budget spent', 'platform_tokens',
        cfg.platform_tokens_per_day, 86400,
        ceil(extract(epoch from (date_trunc('day', now() at time zone 'utc') + interval '1 day'
                                 - (now() at time zone 'utc'))))::integer);
    end if;
  end if;

  select a.rate_limit_per_minute, a.model into agent_limit, agent_model
    from public.marketplace_agents a where a.id = dep.agent_id;
  select * into user_quota
    from private.rate_limit_check('chat', 'chat:' || uid::text, cfg.chat_per_minute);
  select * into dep_quota
    from private.rate_limit_check('deployment', 'deployment:' || p_deployment_id::text,
                                  coalesce(agent_limit, cfg.chat_per_minute));

  if conv is null then
    insert into public.agent_conversations (deployment_id, user_id, title)
    values (p_deployment_id, uid, left(regexp_replace(btrim(p_content), '\s+', ' ', 'g'), 80))
    returning id into conv;
  elsif not exists (
    select 1 from public.agent_conversations c
     where c.id = conv and c.user_id = uid and c.deployment_id = p_deployment_id
  ) then
    raise exception 'conversation not found' using errcode = 'AMNF3';
  end if;

  -- clock_timestamp(), not now(): both rows are written in one transaction and the question
  -- must sort before its answer.
  insert into public.agent_messages
    (conversation_id, user_id, role, content, status, client_message_id, created_at, completed_at)
  values (conv, uid, 'user', p_content, 'completed', p_client_message_id, clock_timestamp(), clock_timestamp())
  returning id into user_msg;

  -- The reply's id may be chosen by the API, which then follows it before this commits.
  insert into public.agent_messages (id, conversation_id, user_id, role, content, status, reply_to, model, created_at)
  values (coalesce(p_reply_id, gen_random_uuid()), conv, uid, 'assistant', '', 'queued', user_msg,
          agent_model, clock_timestamp())
  returning id into reply;

  insert into private.chat_jobs (message_id, trace_id) values (reply, p_trace_id) returning id into job;

  update public.agent_conversations c
     set message_count = c.message_count + 1,
         last_message_at = now(),
         title = coalesce(c.title, left(regexp_replace(btrim(p_content), '\s+', ' ', 'g'), 80))
   where c.id = conv;
  -- At most once a minute: every message updating the deployment row would serialise all sends
  -- to one deployment on that row's lock.
  if dep.last_active_at is null or dep.last_active_at < now() - interval '1 minute' then
    update public.agent_deployments d set last_active_at = now() where d.id = p_deployment_id;
  end if;

  perform pg_notify('agentmarket_chat_jobs', job::text);
  if p_mode is not null then
    insert into private.telemetry_events (name, user_id, deployment_id, properties)
    values ('agent.chat.message.sent', uid, p_deployment_id,
            jsonb_build_object('message_id', user_msg, 'conversation_id', conv,
                               'message_length', length(p_content), 'mode', p_mode));
  end if;
  if dep_quota.remaining < user_quota.remaining then
    select 'deployment'::text as policy, coalesce(agent_limit, cfg.chat_per_minute) as allowed,
           dep_quota.remaining, dep_quota.reset_seconds
      into quota;
  else
    select 'chat'::text as policy, cfg.chat_per_minute as allowed, user_quota.remaining,
           user_quota.reset_seconds
      into quota;
  end if;
  -- The two rows as stored (later statements of this function see them; a query around the
  -- call would not).
  return query
    select conv, true, quota.policy, quota.allowed, quota.remaining, quota.reset_seconds, m.id,
           m.role, m.content, m.status, m.error_code, m.error_message, m.model, m.prompt_tokens,
           m.completion_tokens, m.ttft_ms, m.latency_ms, m.truncated, m.created_at,
           m.completed_at
      from public.agent_messages m
     where m.id in (user_msg, reply)
     order by m.role = 'assistant';
end
$$;

revoke all on function private.send_chat_message(uuid, uuid, text, text, text, uuid, text) from public;
grant execute on function private.send_chat_message(uuid, uuid, text, text, text, uuid, text) to authenticated, service_role;
