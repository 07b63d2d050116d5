-- The chat pipeline: a durable queue of chat jobs and the functions that move a message through it.
--
--   send (as the user)  private.send_chat_message: checks the deployment, creates the conversation,
--                       inserts the user message and the queued assistant reply, enqueues the job
--                       and NOTIFYs workers, all in the caller's transaction; idempotent on
--                       client_message_id.
--   claim (worker)      private.claim_chat_jobs: FOR UPDATE SKIP LOCKED with a lease; expired
--                       leases are reclaimed, jobs out of attempts are failed.
--   stream (worker)     private.append_chat_delta / reset_chat_stream: partial text is kept on the
--                       message and each batch is NOTIFYed on `agentmarket_chat_stream` (payload
--                       names the message), which every functions instance LISTENs to once and
--                       fans out to its SSE clients; a client can (re)attach at any time without
--                       a gap.
--   finish (worker)     private.finish_chat_job: the reply, its metrics, the conversation and the
--                       job in ONE transaction, fenced by the worker's lease: a reply is never
--                       written twice.
--
-- Our SQLSTATEs: AMNF2 deployment not found, AMNF3 conversation not found, AMNF4 message not found,
-- AMPAU deployment paused, AMCFG deployment not configured.

create table private.chat_jobs (
  id bigint generated always as identity primary key,
  message_id uuid not null unique references public.agent_messages (id) on delete cascade,
  status text not null default 'queued'
    constraint chat_jobs_status check (status in ('queued', 'running', 'completed', 'failed', 'cancelled')),
  attempts integer not null default 0 constraint chat_jobs_attempts_nonnegative check (attempts >= 0),
  max_attempts integer not null default 3 constraint chat_jobs_max_attempts_positive check (max_attempts >= 1),
  run_after timestamptz not null default now(),
  locked_by text,
  locked_until timestamptz,
  generation integer not null default 0,
  last_error text constraint chat_jobs_last_error_length check (length(last_error) <= 2000),
  cancel_requested boolean not null default false,
  trace_id text constraint chat_jobs_trace_id_length check (length(trace_id) <= 128),
  created_at timestamptz not null default now(),
  started_at timestamptz,
  finished_at timestamptz,
  constraint chat_jobs_running_is_leased
    check (status <> 'running' or (locked_by is not null and locked_until is not null))
);

comment on table private.chat_jobs is
  'One job per assistant reply. Workers claim with SKIP LOCKED and a lease they keep extending.';

create index chat_jobs_ready_idx on private.chat_jobs (run_after, id) where status = 'queued';
create index chat_jobs_lease_idx on private.chat_jobs (locked_until) where status = 'running';

alter table private.chat_jobs enable row level security;
revoke all on table private.chat_jobs from public, anon, authenticated;
grant all on table private.chat_jobs to service_role;

-- Looking up a retried send by the client's id, across the user's conversations.
create index agent_messages_client_message_idx
  on public.agent_messages (user_id, client_message_id) where client_message_id is not null;

create or replace function private.send_chat_message(
  p_deployment_id uuid,
  p_conversation_id uuid,
  p_content text,
  p_client_message_id text,
  p_trace_id text
)
returns table (
  conversation_id uuid,
  user_message_id uuid,
  assistant_message_id uuid,
  created boolean
)
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  dep public.agent_deployments;
  conv uuid := p_conversation_id;
  existing record;
  user_msg uuid;
  reply uuid;
  job bigint;
begin
  select * into dep
    from public.agent_deployments d
   where d.id = p_deployment_id and d.user_id = uid and d.deleted_at is null;
  if not found then
    raise exception 'deployment not found' using errcode = 'AMNF2';
  end if;

  if p_client_message_id is not null then
    -- Serialise retries of the same send; a repeat returns the original exchange.
    perform pg_advisory_xact_lock(hashtextextended('agentmarket.send:' || uid::text || ':' || p_client_message_id, 0));
    select m.conversation_id as conv_id, m.id as user_id_, r.id as reply_id into existing
      from public.agent_messages m
      join public.agent_conversations c on c.id = m.conversation_id
      left join public.agent_messages r on r.reply_to = m.id
     where m.user_id = uid and m.client_message_id = p_client_message_id and m.role = 'user'
       and c.deployment_id = p_deployment_id
     limit 1;
    if found then
      return query select existing.conv_id, existing.user_id_, existing.reply_id, false;
      return;
    end if;
  end if;

  if dep.status = 'paused' then
    raise exception 'deployment paused' using errcode = 'AMPAU';
  elsif dep.status <> 'active' then
    raise exception 'deployment not configured' using errcode = 'AMCFG';
  end if;

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

  insert into public.agent_messages (conversation_id, user_id, role, content, status, reply_to, model, created_at)
  select conv, uid, 'assistant', '', 'queued', user_msg, a.model, clock_timestamp()
    from public.marketplace_agents a where a.id = dep.agent_id
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
  return query select conv, user_msg, reply, true;
end
$$;

-- The worker's claim: up to p_limit runnable jobs (queued and due, or running with an expired
-- lease), leased to p_worker. Jobs whose lease expired with no attempts left are failed first.
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
    returning j.message_id, j.generation
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

-- Keeps the lease while the worker works; false when the job is no longer this worker's.
create or replace function private.extend_chat_lease(p_job_id bigint, p_worker text, p_lease_seconds integer)
returns table (owned boolean, cancel_requested boolean)
language sql
set search_path = ''
as $$
  with extended as (
    update private.chat_jobs j
       set locked_until = now() + make_interval(secs => p_lease_seconds)
     where j.id = p_job_id and j.status = 'running' and j.locked_by = p_worker
    returning j.cancel_requested
  )
  select exists (select 1 from extended), coalesce((select e.cancel_requested from extended e), false)
$$;

-- A batch of streamed text: appended to the message and published on its channel, both only if
-- the job is still this worker's. Returns the new length (the next event offset), or null.
create or replace function private.append_chat_delta(p_job_id bigint, p_worker text, p_delta text)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  job private.chat_jobs;
  new_length integer;
begin
  select * into job from private.chat_jobs j
   where j.id = p_job_id and j.status = 'running' and j.locked_by = p_worker;
  if not found then
    return null;
  end if;
  update public.agent_messages m
     set content = m.content || p_delta
   where m.id = job.message_id
  returning length(m.content) into new_length;
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'delta', 'g', job.generation, 'o', new_length - length(p_delta), 'd', p_delta)::text
  );
  return new_length;
end
$$;

-- Start the text over (a retried model call after partial output).
create or replace function private.reset_chat_stream(p_job_id bigint, p_worker text)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  job private.chat_jobs;
begin
  update private.chat_jobs j set generation = j.generation + 1
   where j.id = p_job_id and j.status = 'running' and j.locked_by = p_worker
  returning * into job;
  if not found then
    return null;
  end if;
  update public.agent_messages m set content = '' where m.id = job.message_id;
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'reset', 'g', job.generation)::text);
  return job.generation;
end
$$;

-- The end of a job: reply, metrics, conversation, job — one transaction, only for the lease holder.
create or replace function private.finish_chat_job(
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
  p_latency_ms integer
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
    return false;  -- the lease was lost: another worker owns (or finished) this reply
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
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'done', 'g', job.generation, 's', p_status)::text);
  return true;
end
$$;

-- Graceful shutdown: give the job back (the attempt does not count) for another worker.
create or replace function private.release_chat_job(p_job_id bigint, p_worker text)
returns boolean
language plpgsql
set search_path = ''
as $$
declare
  job private.chat_jobs;
begin
  update private.chat_jobs j
     set status = 'queued', locked_by = null, locked_until = null,
         attempts = greatest(j.attempts - 1, 0), run_after = now(), generation = j.generation + 1
   where j.id = p_job_id and j.status = 'running' and j.locked_by = p_worker
  returning * into job;
  if not found then
    return false;
  end if;
  update public.agent_messages m set status = 'queued', content = '' where m.id = job.message_id;
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'reset', 'g', job.generation)::text);
  perform pg_notify('agentmarket_chat_jobs', job.id::text);
  return true;
end
$$;

-- Cancel, as the message's owner: a queued reply is cancelled at once; a running one is flagged
-- and the worker stops between chunks, keeping the partial text.
create or replace function private.cancel_chat_message(p_message_id uuid)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  msg public.agent_messages;
  job private.chat_jobs;
begin
  select * into msg from public.agent_messages m
   where m.id = p_message_id and m.user_id = uid and m.role = 'assistant';
  if not found then
    raise exception 'message not found' using errcode = 'AMNF4';
  end if;
  select * into job from private.chat_jobs j where j.message_id = p_message_id for update;
  if not found or job.status in ('completed', 'failed', 'cancelled') then
    return msg.status;
  end if;
  if job.status = 'queued' then
    update private.chat_jobs j
       set status = 'cancelled', cancel_requested = true, finished_at = now()
     where j.id = job.id;
    update public.agent_messages m
       set status = 'cancelled', completed_at = now()
     where m.id = p_message_id;
    update public.agent_conversations c
       set message_count = c.message_count + 1, last_message_at = now()
     where c.id = msg.conversation_id;
    perform pg_notify('agentmarket_chat_stream', json_build_object('m', p_message_id, 'e', 'done', 'g', job.generation, 's', 'cancelled')::text);
    return 'cancelled';
  end if;
  update private.chat_jobs j set cancel_requested = true where j.id = job.id;
  perform pg_notify('agentmarket_chat_cancel', p_message_id::text);
  return 'cancelling';
end
$$;

-- Conversations without a first message (POST …/conversations), and deleting one with its messages.
create or replace function private.create_conversation(p_deployment_id uuid, p_title text)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  conv uuid;
begin
  if not exists (
    select 1 from public.agent_deployments d
     where d.id = p_deployment_id and d.user_id = uid and d.deleted_at is null
  ) then
    raise exception 'deployment not found' using errcode = 'AMNF2';
  end if;
  insert into public.agent_conversations (deployment_id, user_id, title)
  values (p_deployment_id, uid, nullif(btrim(p_title), ''))
  returning id into conv;
  return conv;
end
$$;

create or replace function private.delete_conversation(p_deployment_id uuid, p_conversation_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
begin
  -- Messages, their jobs and feedback go with it (foreign keys cascade); a worker still
  -- answering finds its job gone and discards the reply.
  delete from public.agent_conversations c
   where c.id = p_conversation_id and c.deployment_id = p_deployment_id and c.user_id = uid;
  return found;
end
$$;

-- What a client attaching to a reply's stream needs: status, text so far and the attempt's
-- generation (event ids are "<generation>.<offset>"). Owner only.
create or replace function private.message_stream_state(p_message_id uuid)
returns table (status text, content text, generation integer)
language sql
stable
security definer
set search_path = ''
as $$
  select m.status, m.content, coalesce(j.generation, 0)
    from public.agent_messages m
    left join private.chat_jobs j on j.message_id = m.id
   where m.id = p_message_id and m.user_id = (select auth.uid())
$$;

-- New functions are executable by PUBLIC by default: close each, then grant what is needed.
revoke all on function private.send_chat_message(uuid, uuid, text, text, text) from public;
revoke all on function private.claim_chat_jobs(text, integer, integer) from public;
revoke all on function private.extend_chat_lease(bigint, text, integer) from public;
revoke all on function private.append_chat_delta(bigint, text, text) from public;
revoke all on function private.reset_chat_stream(bigint, text) from public;
revoke all on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer) from public;
revoke all on function private.release_chat_job(bigint, text) from public;
revoke all on function private.cancel_chat_message(uuid) from public;
revoke all on function private.create_conversation(uuid, text) from public;
revoke all on function private.delete_conversation(uuid, uuid) from public;
revoke all on function private.message_stream_state(uuid) from public;
grant execute on function private.send_chat_message(uuid, uuid, text, text, text) to authenticated;
grant execute on function private.cancel_chat_message(uuid) to authenticated;
grant execute on function private.create_conversation(uuid, text) to authenticated;
grant execute on function private.delete_conversation(uuid, uuid) to authenticated;
grant execute on function private.message_stream_state(uuid) to authenticated;
grant execute on all functions in schema private to service_role;
