-- The chat worker's statements (docs/architecture.md#queue-and-leases), run by workers/store.py
-- as the worker's login (service_role). Every private.chat_* function acts only for the holder of
-- the job's lease (`worker_id`).

-- name: claim_chat_jobs
-- Leases up to %(limit)s runnable jobs to this worker for %(lease_seconds)s seconds, each with what
-- answering its reply needs, in one statement. `more` (on every row) is true when the claim
-- filled its limit and more jobs were still waiting. The context: the reply's conversation,
-- deployment, agent and prompt; the conversation's finished, non-empty turns before the reply
-- (the most recent %(history_limit)s, oldest first, as two parallel arrays); and the deployment's
-- sealed secrets (opened by the worker with SECRETS_ENCRYPTION_KEY, three parallel arrays); all
-- null when the reply is gone (its conversation was deleted). The context is read by a VOLATILE
-- function, with a snapshot taken after the claim (supabase/migrations/
-- 20261130150100_claim_context_snapshot.sql): it sees every reply the claim saw. Jobs in
-- %(running)s (the ids this worker is answering right now) are never taken over by this worker,
-- even when their lease lapsed while it stalled (20261130170000_claim_spares_running_jobs.sql).
with claimed as materialized (
  select * from private.claim_chat_jobs_counted(
    %(worker_id)s, %(limit)s, %(lease_seconds)s, %(running)s::bigint[]
  )
)
select j.id as job_id, j.message_id as job_message_id, j.attempts, j.created_at, j.started_at,
       j.trace_id, j.more, ctx.*
  from claimed j
  left join lateral private.chat_job_context(j.message_id, %(history_limit)s) ctx on true
 order by j.id;

-- name: chat_queue_depth
-- Jobs waiting to be claimed and how long the oldest claimable one has waited, in seconds (the
-- queue gauges, sampled on a timer). A retry waiting out its backoff is queued, not yet waiting.
select count(*) as depth,
       coalesce(extract(epoch from now() - min(run_after) filter (where run_after <= now())), 0)
         ::float8 as oldest_seconds
  from private.chat_jobs
 where status = 'queued';

-- name: marketplace_activity
-- The marketplace gauges, sampled on the queue gauges' timer: deployments in service (status
-- active) and conversations with a message in the last %(active_minutes)s minutes.
select (select count(*) from public.agent_deployments where status = 'active') as agents_active,
       (select count(*) from public.agent_conversations
         where last_message_at > now() - make_interval(mins => %(active_minutes)s))
         as conversations_active;

-- name: fold_analytics
-- The admin analytics' change rows (every send, finish and refused send inserts one: no shared
-- row is updated; docs/operations.md#analytics) moved into their cells, on the gauges' timer.
-- How many it moved; 0 while another worker's fold runs.
select private.analytics_fold() as moved;

-- name: extend_chat_lease
-- Keeps the lease; `owned` is false once the job is no longer this worker's.
select owned, cancel_requested
  from private.extend_chat_lease(%(job_id)s, %(worker_id)s, %(lease_seconds)s);

-- name: append_chat_deltas
-- One tick of the relay: the pending text of every active reply of this worker, as parallel
-- arrays (a reply's pieces in order, the first naming the offset it starts at); one row per reply
-- with its new length, or null when its lease is lost. Its own transaction, committed with
-- synchronous_commit off (partial text need not wait for the WAL flush; the finish is durable).
select d.job_id, d.new_length, set_config('synchronous_commit', 'off', true)
  from private.append_chat_deltas(%(worker_id)s, %(job_ids)s::bigint[], %(offsets)s::integer[],
                                  %(deltas)s::text[]) d;

-- name: reset_chat_stream
-- Starts the reply's text over (a retried model call after partial output).
select private.reset_chat_stream(%(job_id)s, %(worker_id)s);

-- name: finish_chat_job
-- Writes the reply, its metrics, the conversation and the job, and (when the lease was still
-- ours) the reply's product event, in one statement, so in one transaction; false when the lease
-- is lost. The event's name is from agentmarket.services.telemetry.EVENTS (checked by the
-- worker); the worker names the user itself: it acts for no caller. No event: a null name.
-- %(deployment_error)s (else null): the model refused the deployment's own key or account, and
-- the deployment moves to `error` with this reason, if %(deployment_key)s (the sealed key the
-- refused call used) is still its key.
with finished as (
  select private.finish_chat_job(
           p_job_id => %(job_id)s,
           p_worker => %(worker_id)s,
           p_status => %(status)s,
           p_content => %(content)s,
           p_error_code => %(error_code)s,
           p_error_message => %(error_message)s,
           p_model => %(model)s,
           p_prompt_tokens => %(prompt_tokens)s,
           p_completion_tokens => %(completion_tokens)s,
           p_ttft_ms => %(ttft_ms)s,
           p_latency_ms => %(latency_ms)s,
           p_truncated => %(truncated)s,
           p_deployment_error => %(deployment_error)s,
           p_deployment_key => %(deployment_key)s) as ok
), recorded as (
  insert into private.telemetry_events (name, user_id, agent_id, deployment_id, properties)
  select %(event_name)s::text, %(event_user_id)s::uuid, %(event_agent_id)s::uuid,
         %(event_deployment_id)s::uuid, %(event_properties)s::jsonb
    from finished
   where finished.ok and %(event_name)s::text is not null
)
select ok from finished;

-- name: release_chat_job
-- Hands the job back (the attempt does not count) for another worker.
select private.release_chat_job(%(job_id)s, %(worker_id)s);

-- name: chat_job_knowledge
-- Support agents: the knowledge-base entries of the deployment's config most relevant to the
-- question, by Postgres full-text search (titles weigh more), best first.
with question as (
  select websearch_to_tsquery('english', %(question)s) as q,
         to_tsquery('english', coalesce(nullif(array_to_string(
           array(select quote_literal(w) || ':*'
                   from regexp_split_to_table(lower(left(%(question)s, 500)), '[^[:alnum:]]+') w
                  where length(w) > 2), ' | '), ''), 'nothing_matches_this')) as loose
), entries as (
  select e ->> 'title' as title, e ->> 'content' as content, ord,
         setweight(to_tsvector('english', coalesce(e ->> 'title', '')), 'A')
         || setweight(to_tsvector('english', coalesce(e ->> 'content', '')), 'B') as doc
    from jsonb_array_elements(coalesce(%(config)s::jsonb -> 'knowledge_base', '[]'::jsonb))
         with ordinality as kb(e, ord)
)
select title, content
  from entries, question
 where doc @@ question.q or doc @@ question.loose
 order by ts_rank_cd(doc, question.q) + 0.5 * ts_rank_cd(doc, question.loose) desc, ord
 limit %(limit)s;
