-- A worker never takes over a job it is still running itself. A lease is kept alive by extending
-- it every third of its length; when a worker stalls past its lease (a loaded machine), the job
-- is claimable again, and the stalled worker's own next claim could take it: two attempts of one
-- reply would then run in one process, both "owning" the lease (every fence checks the worker
-- id). The claim now takes the ids the worker is running (`p_running`) and leaves those alone, in
-- the takeover and in the sweep of jobs out of attempts alike; the running attempt extends its
-- lease at its next round. Another worker may still take the job over (its fences then stop the
-- stalled attempt), and a job the worker no longer runs (its attempt ended without finishing or
-- handing back, e.g. the database was lost) is taken over as before, by any worker.

drop function private.claim_chat_jobs_counted(text, integer, integer);
drop function private.claim_chat_jobs(text, integer, integer);

create function private.claim_chat_jobs(
  p_worker text, p_limit integer, p_lease_seconds integer, p_running bigint[] default '{}'
)
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
          and not (d.locked_by = p_worker and d.id = any(p_running))
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
        or (j.status = 'running' and j.locked_until < now()
            and not (j.locked_by = p_worker and j.id = any(p_running)))
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

create function private.claim_chat_jobs_counted(
  p_worker text, p_limit integer, p_lease_seconds integer, p_running bigint[] default '{}'
)
returns table (
  id bigint,
  message_id uuid,
  attempts integer,
  created_at timestamptz,
  started_at timestamptz,
  trace_id text,
  more boolean
)
language plpgsql
rows 8
set search_path = ''
as $$
declare
  claimed private.chat_jobs[];
  more_waiting boolean := false;
begin
  select coalesce(array_agg(c), '{}') into claimed
    from private.claim_chat_jobs(p_worker, p_limit, p_lease_seconds, p_running) c;
  -- Fewer than asked for: the claim took every job it could (the rest, if any, were being
  -- claimed by other workers at that moment). A full claim looks whether one more is waiting.
  if cardinality(claimed) >= p_limit then
    more_waiting := exists (
      select 1 from private.chat_jobs j
       where j.status = 'queued' and j.run_after <= now()
    ) or exists (
      select 1 from private.chat_jobs j
       where j.status = 'running' and j.locked_until < now()
         and not (j.locked_by = p_worker and j.id = any(p_running))
    );
  end if;
  return query
  select c.id, c.message_id, c.attempts, c.created_at, c.started_at, c.trace_id, more_waiting
    from unnest(claimed) c;
end
$$;

revoke all on function private.claim_chat_jobs(text, integer, integer, bigint[]) from public;
revoke all on function private.claim_chat_jobs_counted(text, integer, integer, bigint[]) from public;
grant execute on function private.claim_chat_jobs(text, integer, integer, bigint[]) to service_role;
grant execute on function private.claim_chat_jobs_counted(text, integer, integer, bigint[]) to service_role;
