-- The deployment `error` state and a telemetry event for every failed reply
-- (docs/operations.md#model-calls-and-retries, docs/api.md#deployment-status).
--
--   * `finish_chat_job(…, p_deployment_error)`: when the worker fails a reply because the model
--     provider rejected the deployment's own API key or account (401 `invalid_api_key`, 403
--     `upstream_forbidden`, an exhausted quota), it passes the reason and the same transaction
--     moves the deployment from `active` to `error` with that `status_reason`. The platform's key
--     being refused is the operator's problem, not the deployment's: the worker passes nothing.
--   * `send_chat_message` refuses a deployment in `error` with AMERR (409 `deployment_error`,
--     naming the reason), after a repeated client_message_id is answered as before.
--   * `update_deployment`: `error` is left by a new validated configuration (a new key), or by
--     resuming (`status: active`, the stored configuration validated again), like `paused` and
--     `configuring`; pausing it sets `paused`. Renaming alone keeps it.
--   * `claim_chat_jobs`: a reply failed as `worker_lost` (its lease expired past its attempts)
--     writes `agent.chat.error` in the same transaction, like every failure the worker writes.
--
-- The rest of each function is unchanged from its previous migration (20261130140000,
-- 20261130130000, 20261129140000, 20261130100000).

drop function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean);

create function private.finish_chat_job(
  p_job_id bigint,
  p_worker text,
  p_status text,
  p_content text,
  p_error_code text,
  p_error_message text,
  p_model text,
  p_prompt_tokens integer,
  p_completion_tokens integer,
  p_ttft_ms integer,
  p_latency_ms integer,
  p_truncated boolean default false,
  p_deployment_error text default null
)
returns boolean
language plpgsql
set search_path = ''
as $$
declare
  job private.chat_jobs;
  conv uuid;
begin
  if p_status not in ('completed', 'failed', 'cancelled') then
    raise exception 'not a final status: %', p_status using errcode = '22023';
  end if;
  select * into job from private.chat_jobs j
   where j.id = p_job_id and j.status = 'running' and j.locked_by = p_worker
     for update;
  if not found then
    return false;  -- the lease was lost (or the reply was cancelled): nothing is written
  end if;
  update public.agent_messages m
     set content = coalesce(p_content, m.content),
         status = p_status,
         error_code = p_error_code,
         error_message = p_error_message,
         model = coalesce(p_model, m.model),
         prompt_tokens = p_prompt_tokens,
         completion_tokens = p_completion_tokens,
         ttft_ms = p_ttft_ms,
         latency_ms = p_latency_ms,
         truncated = coalesce(p_truncated, false),
         completed_at = now()
   where m.id = job.message_id
  returning m.conversation_id into conv;
  update public.agent_conversations c
     set message_count = c.message_count + 1, last_message_at = now()
   where c.id = conv;
  update private.chat_jobs j
     set status = p_status, finished_at = now(), locked_by = null, locked_until = null,
         last_error = case when p_status = 'failed' then p_error_code || ': ' || coalesce(p_error_message, '') end
   where j.id = p_job_id;
  -- The model refused the deployment's own key or account: the deployment stops taking messages
  -- until its owner reconfigures it (update_deployment). Only an active one: a pause, a
  -- reconfiguration or a delete since the claim is the owner's later word.
  if p_status = 'failed' and p_deployment_error is not null then
    update public.agent_deployments d
       set status = 'error', status_reason = left(p_deployment_error, 500)
      from public.agent_conversations c
     where c.id = conv and d.id = c.deployment_id
       and d.status = 'active' and d.deleted_at is null;
  end if;
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'done', 'g', job.generation, 's', p_status)::text);
  return true;
end
$$;

revoke all on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean, text) from public;
grant execute on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean, text) to service_role;

create or replace function private.claim_chat_jobs(p_worker text, p_limit integer, p_lease_seconds integer)
returns setof private.chat_jobs
language plpgsql
set search_path = ''
as $$
declare
  dead record;
begin
  for dead in
    update private.chat_jobs j
       set status = 'failed', finished_at = now(), locked_by = null, locked_until = null,
           last_error = coalesce(j.last_error, 'the worker stopped responding')
     where j.id in (
       select d.id from private.chat_jobs d
        where d.status = 'running' and d.locked_until < now() and d.attempts >= d.max_attempts
          for update skip locked)
    returning j.message_id, j.generation, j.attempts
  loop
    with failed as (
      update public.agent_messages m
         set status = 'failed', error_code = 'worker_lost',
             error_message = 'The reply could not be completed; send the message again.',
             completed_at = now()
       where m.id = dead.message_id
      returning m.conversation_id
    )
    update public.agent_conversations c
       set message_count = c.message_count + 1, last_message_at = now()
      from failed where c.id = failed.conversation_id;
    insert into private.telemetry_events (name, user_id, agent_id, deployment_id, properties)
    select 'agent.chat.error', c.user_id, d.agent_id, d.id,
           jsonb_build_object('message_id', dead.message_id, 'error_type', 'worker_lost',
                              'error_message', 'The reply could not be completed; send the message again.',
                              'attempt', dead.attempts)
      from public.agent_messages m
      join public.agent_conversations c on c.id = m.conversation_id
      join public.agent_deployments d on d.id = c.deployment_id
     where m.id = dead.message_id;
    perform pg_notify('agentmarket_chat_stream',
                      json_build_object('m', dead.message_id, 'e', 'done', 'g', dead.generation, 's', 'failed')::text);
  end loop;

  return query
  with ready as (
    select j.id
      from private.chat_jobs j
     where (j.status = 'queued' and j.run_after <= now())
        or (j.status = 'running' and j.locked_until < now())
     order by j.run_after, j.id
     limit p_limit
       for update skip locked
  ), claimed as (
    update private.chat_jobs j
       set status = 'running',
           attempts = j.attempts + 1,
           locked_by = p_worker,
           locked_until = now() + make_interval(secs => p_lease_seconds),
           started_at = coalesce(j.started_at, now()),
           generation = j.generation + 1
      from ready
     where j.id = ready.id
    returning j.*
  ), running as (
    update public.agent_messages m
       set status = 'running', content = ''
      from claimed
     where m.id = claimed.message_id
    returning m.id
  )
  select c.* from claimed c;
end
$$;

create or replace function private.update_deployment(
  p_id uuid,
  p_name text,
  p_config text,
  p_missing text[],
  p_signature bytea,
  p_status text
)
returns public.agent_deployments
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  current public.agent_deployments;
  updated public.agent_deployments;
  ready record;
  new_config jsonb;
  new_status text;
  new_reason text;
begin
  if p_status is not null and p_status not in ('active', 'paused') then
    raise exception 'status must be active or paused' using errcode = '22023';
  end if;
  perform private.rate_limit_check('deploy', 'deploy:' || uid::text,
                                   (select s.deploy_per_minute from private.app_settings s));
  perform pg_advisory_xact_lock(hashtextextended('agentmarket.deploy:' || uid::text, 0));
  select * into current
    from public.agent_deployments
   where id = p_id and user_id = uid and deleted_at is null
     for update;
  if not found then
    return null;
  end if;
  new_config := current.config;
  new_status := current.status;
  new_reason := current.status_reason;
  if p_config is not null then
    if not private.deployment_signature_valid('update', uid, p_id, p_config, p_missing, p_signature) then
      raise exception 'configuration signature does not match' using errcode = 'AMSIG';
    end if;
    select * into ready from private.readiness(p_missing);
    if p_status = 'active' and ready.status <> 'active' then
      raise exception 'deployment not configured: %', ready.status_reason
        using errcode = 'AMCFG', detail = ready.status_reason;
    end if;
    new_config := p_config::jsonb;
    if current.status <> 'paused' or p_status = 'active' then
      new_status := ready.status;
      new_reason := ready.status_reason;
    end if;
  elsif p_status = 'active' and current.status in ('paused', 'configuring', 'error') then
    raise exception 'activating needs a validated configuration' using errcode = 'AMSIG';
  end if;
  if p_status = 'paused' then
    new_status := 'paused';
    new_reason := null;
  end if;
  if current.status = 'paused' and new_status <> 'paused'
     and private.count_active_deployments(uid)
         >= (select s.max_active_deployments from private.app_settings s) then
    raise exception 'deployment limit reached' using errcode = 'AMLIM';
  end if;
  update public.agent_deployments
     set name = coalesce(p_name, current.name),
         config = new_config,
         status = new_status,
         status_reason = new_reason
   where id = p_id
  returning * into updated;
  return updated;
end
$$;

create or replace function private.send_chat_message(
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
  elsif dep.status = 'error' then
    raise exception 'deployment error: %', coalesce(dep.status_reason, 'unknown')
      using errcode = 'AMERR', detail = coalesce(dep.status_reason, 'unknown');
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
