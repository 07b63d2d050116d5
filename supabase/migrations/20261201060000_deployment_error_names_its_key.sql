-- A refused key moves its deployment to `error` only while it is still the deployment's key
-- (docs/api.md#deployment-status).
--
-- The worker opens the deployment's key when it claims a reply and learns that the provider
-- refused it one model call later. Its owner may have saved a new key in between
-- (update_deployment leaves `error` for `active` with a freshly validated configuration, and a
-- deployment that was `active` stays so): the old key's refusal must not then put the deployment
-- with its new key in `error`. `finish_chat_job` now takes the sealed key the refused call used
-- (`p_deployment_key`, the stored ciphertext: every saved key is sealed with a fresh nonce, so a
-- new key, or the same key saved again, never has the same one) and writes the error only when
-- that is still the deployment's stored `openai_api_key`. A key re-sealed by a rotation of
-- SECRETS_ENCRYPTION_KEY meanwhile does not match either: that reply fails without moving the
-- deployment, and the next one refused moves it.
--
-- The rest of the function is unchanged from 20261130162000_deployment_error_state.sql.

drop function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean, text);

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
  p_deployment_error text default null,
  p_deployment_key bytea default null
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
  -- until its owner reconfigures it (update_deployment). Only an active one still holding the
  -- refused key: a pause, a new key or a delete since the claim is the owner's later word.
  if p_status = 'failed' and p_deployment_error is not null and p_deployment_key is not null then
    update public.agent_deployments d
       set status = 'error', status_reason = left(p_deployment_error, 500)
      from public.agent_conversations c
     where c.id = conv and d.id = c.deployment_id
       and d.status = 'active' and d.deleted_at is null
       and exists (select 1 from private.deployment_secrets s
                    where s.deployment_id = d.id and s.field = 'openai_api_key'
                      and s.ciphertext = p_deployment_key);
  end if;
  perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'done', 'g', job.generation, 's', p_status)::text);
  return true;
end
$$;

revoke all on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean, text, bytea) from public;
grant execute on function private.finish_chat_job(bigint, text, text, text, text, text, text, integer, integer, integer, integer, boolean, text, bytea) to service_role;
