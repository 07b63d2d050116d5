-- A claimed job's context in a function of its own, called by the worker's claim statement
-- (agentmarket/db/sql/worker.sql, claim_chat_jobs) for each job it claimed.
--
-- The claim and the context travel in one statement, but a statement reads with the snapshot it
-- started with, while the claim function inside it takes its own: it could claim a job whose
-- send committed after the statement began, whose reply the statement then could not see. The
-- worker took that for a deleted conversation and left the job to its lease (30 s), under load a
-- few replies in a hundred. A VOLATILE function reads with a fresh snapshot, taken after the
-- claim: it sees every reply the claim did. (Same columns as the query it replaces.)

create function private.chat_job_context(p_message_id uuid, p_history_limit integer)
returns table (
  message_id uuid,
  conversation_id uuid,
  reply_to uuid,
  reply_created_at timestamptz,
  deployment_id uuid,
  user_id uuid,
  config jsonb,
  deployment_status text,
  deleted_at timestamptz,
  requires_user_key boolean,
  agent_id uuid,
  agent_slug text,
  agent_name text,
  kind text,
  model text,
  system_prompt text,
  history_roles text[],
  history_contents text[],
  secret_fields text[],
  secret_key_ids text[],
  secret_ciphertexts bytea[]
)
language sql
volatile
set search_path = ''
rows 1
as $$
select m.id as message_id, m.conversation_id, m.reply_to, m.created_at as reply_created_at,
       c.deployment_id, c.user_id, d.config, d.status as deployment_status, d.deleted_at,
       coalesce(a.config_schema -> 'required', '[]'::jsonb) ? 'openai_api_key'
         as requires_user_key,
       a.id as agent_id, a.slug as agent_slug, a.name as agent_name, a.kind, a.model,
       p.system_prompt,
       coalesce(h.roles, '{}') as history_roles, coalesce(h.contents, '{}') as history_contents,
       coalesce(s.fields, '{}') as secret_fields, coalesce(s.key_ids, '{}') as secret_key_ids,
       coalesce(s.ciphertexts, '{}') as secret_ciphertexts
  from public.agent_messages m
  join public.agent_conversations c on c.id = m.conversation_id
  join public.agent_deployments d on d.id = c.deployment_id
  join public.marketplace_agents a on a.id = d.agent_id
  left join private.agent_prompts p on p.agent_id = a.id
  left join lateral (
    select array_agg(t.role order by t.created_at, t.id) as roles,
           array_agg(t.content order by t.created_at, t.id) as contents
      from (select x.role, x.content, x.created_at, x.id
              from public.agent_messages x
             where x.conversation_id = m.conversation_id
               and x.created_at <= m.created_at
               and x.id <> m.id
               and x.status = 'completed'
               and x.content <> ''
             order by x.created_at desc, x.id desc
             limit p_history_limit) t
  ) h on true
  left join lateral (
    select array_agg(ds.field order by ds.field) as fields,
           array_agg(ds.key_id order by ds.field) as key_ids,
           array_agg(ds.ciphertext order by ds.field) as ciphertexts
      from private.deployment_secrets ds
     where ds.deployment_id = c.deployment_id
  ) s on true
 where m.id = p_message_id
$$;

revoke all on function private.chat_job_context(uuid, integer) from public;
grant execute on function private.chat_job_context(uuid, integer) to service_role;
