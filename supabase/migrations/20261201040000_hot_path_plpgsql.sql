-- Planned once per connection, not on every call: the functions that run for every chat message
-- inside a single-row statement are PL/pgSQL now (same signatures, results, privileges and
-- search_path).
--
-- PostgreSQL (15) plans a LANGUAGE sql function that it cannot inline (every one with `SET
-- search_path`) afresh in each statement that calls it; PL/pgSQL keeps its statements' plans for
-- the session. Measured per call on a pooled connection (pg_stat_user_functions, one chat message
-- at a time): private.chat_job_context 2.7 ms (1.7 ms by \timing in psql, 0.26 ms for the same
-- query prepared), in the worker's claim statement, on the way to the model; private.analytics_bucket
-- 0.18 ms, evaluated six times per message by analytics_replies' generated columns (insert at the
-- send, update at the claim and the finish); private.analytics_histogram_unit 0.09 ms, twice per
-- finish. docs/benchmarks.md#chat-pipeline-against-a-naive-proxy-post-apiagentsidchat-streaming.

-- The claimed job's context. VOLATILE as before: each statement of a PL/pgSQL function reads
-- with a snapshot taken when it starts, after the claim (20261130150100_claim_context_snapshot.sql).
create or replace function private.chat_job_context(p_message_id uuid, p_history_limit integer)
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
language plpgsql
volatile
set search_path = ''
rows 1
as $$
#variable_conflict use_column
begin
  return query
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
     where m.id = p_message_id;
end
$$;

-- A duration's bucket: 0..63 exactly, then 64 + 32·(e − 6) + (v >> (e − 5)) − 32 for
-- 2^e ≤ v < 2^(e+1) (20261130190100_analytics_reply_cells.sql). The stored buckets are unchanged:
-- tests/integration/test_analytics_histograms.py checks every value against the formula.
create or replace function private.analytics_bucket(p_ms integer)
returns smallint
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
declare
  e integer;
begin
  if p_ms is null then
    return null;
  elsif p_ms < 64 then
    return greatest(p_ms, 0)::smallint;
  end if;
  e := 32 - position('1' in p_ms::bit(32)::text);
  return (64 + (e - 6) * 32 + ((p_ms >> (e - 5)) - 32))::smallint;
end
$$;

-- One reply in a histogram: 1 in the bucket's ten digits (none for a missing duration).
create or replace function private.analytics_histogram_unit(p_bucket smallint)
returns numeric
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
begin
  return case when p_bucket is null then 0 else ('1e' || 10 * p_bucket)::numeric end;
end
$$;
