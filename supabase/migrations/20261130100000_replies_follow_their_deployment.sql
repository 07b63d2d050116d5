-- Replies follow the deployment and conversation they belong to, and are bounded.
--
--   * Deleting a deployment cancels its replies that are still queued or being written: the job
--     is cancelled (a worker holding it loses it at its next write and discards the rest), the
--     message ends `cancelled` with error code `deployment_deleted`, and its stream gets its
--     terminal event. No reply of a deleted deployment reaches the model afterwards (the worker
--     also re-checks at load, for a send that raced the delete).
--   * Deleting a conversation ends the streams of its unfinished replies (their rows go with the
--     conversation; a client attached to one gets a terminal event instead of pings forever), and
--     tells the worker to stop answering.
--   * `agent_messages.truncated`: the reply was cut, at the model's token limit or at the stored
--     length limit; it is still `completed`. `finish_chat_job` takes it.

alter table public.agent_messages
  add column truncated boolean not null default false;

comment on column public.agent_messages.truncated is
  'The reply was cut (the model''s max_tokens, or the stored length limit); status stays completed.';

drop function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer);

-- The end of a job: reply, metrics, conversation, job — one transaction, only for the lease holder.
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
  p_truncated boolean default false
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
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'done', 'g', job.generation, 's', p_status)::text);
  return true;
end
$$;

-- A reply stops unanswered: its stream gets the terminal event (cancelled) and a worker writing it
-- is told to stop. Both notifications go out at commit.
create function private.stop_reply(p_message_id uuid, p_generation integer)
returns void
language sql
set search_path = ''
as $$
  select pg_notify('agentmarket_chat_stream',
                   json_build_object('m', p_message_id, 'e', 'done', 'g', p_generation, 's', 'cancelled')::text),
         pg_notify('agentmarket_chat_cancel', p_message_id::text)
$$;

create or replace function private.delete_deployment(p_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  reply record;
begin
  update public.agent_deployments
     set deleted_at = now(), status = 'paused', status_reason = 'deleted'
   where id = p_id and user_id = uid and deleted_at is null;
  if not found then
    return false;
  end if;
  -- The user's keys go with the deployment.
  delete from private.deployment_secrets where deployment_id = p_id;
  -- Its unfinished replies stop here.
  for reply in
    update private.chat_jobs j
       set status = 'cancelled', cancel_requested = true, finished_at = now(),
           locked_by = null, locked_until = null,
           last_error = 'deployment_deleted: the deployment was deleted'
      from public.agent_messages m
      join public.agent_conversations c on c.id = m.conversation_id
     where j.message_id = m.id
       and c.deployment_id = p_id
       and j.status in ('queued', 'running')
    returning j.message_id, j.generation, m.conversation_id
  loop
    update public.agent_messages m
       set status = 'cancelled', error_code = 'deployment_deleted',
           error_message = 'The deployment was deleted before this reply was finished.',
           completed_at = now()
     where m.id = reply.message_id;
    update public.agent_conversations c
       set message_count = c.message_count + 1, last_message_at = now()
     where c.id = reply.conversation_id;
    perform private.stop_reply(reply.message_id, reply.generation);
  end loop;
  return true;
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
  unfinished record;
begin
  -- Streams attached to an unfinished reply get their terminal event (delivered at commit, when
  -- the rows are gone: readers then find the message deleted); the worker answering it stops.
  for unfinished in
    select j.message_id, j.generation
      from private.chat_jobs j
      join public.agent_messages m on m.id = j.message_id
      join public.agent_conversations c on c.id = m.conversation_id
     where c.id = p_conversation_id and c.deployment_id = p_deployment_id and c.user_id = uid
       and j.status in ('queued', 'running')
  loop
    perform private.stop_reply(unfinished.message_id, unfinished.generation);
  end loop;
  -- Messages, their jobs and feedback go with it (foreign keys cascade).
  delete from public.agent_conversations c
   where c.id = p_conversation_id and c.deployment_id = p_deployment_id and c.user_id = uid;
  return found;
end
$$;

revoke all on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean) from public;
revoke all on function private.stop_reply(uuid, integer) from public;
revoke all on function private.delete_deployment(uuid) from public;
revoke all on function private.delete_conversation(uuid, uuid) from public;
grant execute on function private.delete_deployment(uuid) to authenticated;
grant execute on function private.delete_conversation(uuid, uuid) to authenticated;
grant execute on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean) to service_role;
grant execute on function private.stop_reply(uuid, integer) to service_role;
