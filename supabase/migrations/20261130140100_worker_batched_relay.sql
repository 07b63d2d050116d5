-- The worker writes the streamed text of all its replies in one statement per tick, and a claim
-- says whether more jobs are waiting (docs/architecture.md#worker).
--
--   * `append_chat_deltas`: a batch of pieces for several replies at once. Each reply's pieces
--     (in the arrays' order) are appended to its message (only the new text travels:
--     `content || text`) and each piece is published on `agentmarket_chat_stream` exactly as
--     `append_chat_delta` does (same payload), only while the job is still running under this
--     worker's lease. The job row is locked first, so a finish, reset, release or reclaim of
--     the same job is ordered before or after the append, never interleaved with it. A reply's
--     first piece names the offset it starts at (the others follow on from it): the append
--     happens only when the stored text is exactly that long, so a batch sent again (the answer
--     to a committed statement was lost) is not appended twice. Returns one row per reply: its
--     new length, or null when the job is no longer this worker's (or the stored text is not
--     what the worker relayed).
--   * `claim_chat_jobs_counted`: the claim (`claim_chat_jobs`), plus on every row whether more
--     jobs were still claimable when it filled its limit: a worker whose claim took fewer jobs
--     than it asked for, or found no more waiting, does not claim again when a job ends.

create function private.append_chat_deltas(
  p_worker text,
  p_job_ids bigint[],
  p_offsets integer[],
  p_deltas text[]
)
returns table (job_id bigint, new_length integer)
language plpgsql
set search_path = ''
as $$
declare
  batch record;
  piece record;
  job private.chat_jobs;
  stored integer;
  at integer;
begin
  if cardinality(p_job_ids) is distinct from cardinality(p_offsets)
     or cardinality(p_job_ids) is distinct from cardinality(p_deltas) then
    raise exception 'job ids, offsets and deltas differ in length' using errcode = '22023';
  end if;
  -- One reply at a time, in job id order (a stable lock order between batches).
  for batch in
    select u.id, (array_agg(u.start order by u.ord))[1] as start,
           string_agg(u.delta, '' order by u.ord) as text
      from unnest(p_job_ids, p_offsets, p_deltas) with ordinality as u(id, start, delta, ord)
     group by u.id
     order by u.id
  loop
    job_id := batch.id;
    new_length := null;
    select * into job from private.chat_jobs j
     where j.id = batch.id and j.status = 'running' and j.locked_by = p_worker
       for update;
    if found then
      update public.agent_messages m
         set content = m.content || batch.text
       where m.id = job.message_id and length(m.content) = batch.start
      returning length(m.content) into stored;
      if found then
        new_length := stored;
        at := batch.start;
        for piece in
          select u.delta
            from unnest(p_job_ids, p_offsets, p_deltas) with ordinality as u(id, start, delta, ord)
           where u.id = batch.id
           order by u.ord
        loop
          perform pg_notify('agentmarket_chat_stream', json_build_object('m', job.message_id, 'e', 'delta', 'g', job.generation, 'o', at, 'd', piece.delta)::text);
          at := at + length(piece.delta);
        end loop;
      else
        -- Already appended by this very batch sent before (its answer was lost), or not the text
        -- this worker relayed: nothing is written either way.
        select length(m.content) into stored from public.agent_messages m where m.id = job.message_id;
        if stored = batch.start + length(batch.text) then
          new_length := stored;
        end if;
      end if;
    end if;
    return next;
  end loop;
end
$$;

create function private.claim_chat_jobs_counted(p_worker text, p_limit integer, p_lease_seconds integer)
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
set search_path = ''
as $$
declare
  claimed private.chat_jobs[];
  more_waiting boolean := false;
begin
  select coalesce(array_agg(c), '{}') into claimed
    from private.claim_chat_jobs(p_worker, p_limit, p_lease_seconds) c;
  -- Fewer than asked for: the claim took every job it could (the rest, if any, were being
  -- claimed by other workers at that moment). A full claim looks whether one more is waiting.
  if cardinality(claimed) >= p_limit then
    more_waiting := exists (
      select 1 from private.chat_jobs j
       where j.status = 'queued' and j.run_after <= now()
    ) or exists (
      select 1 from private.chat_jobs j
       where j.status = 'running' and j.locked_until < now()
    );
  end if;
  return query
  select c.id, c.message_id, c.attempts, c.created_at, c.started_at, c.trace_id, more_waiting
    from unnest(claimed) c;
end
$$;

revoke all on function private.append_chat_deltas(text, bigint[], integer[], text[]) from public;
revoke all on function private.claim_chat_jobs_counted(text, integer, integer) from public;
grant execute on function private.append_chat_deltas(text, bigint[], integer[], text[]) to service_role;
grant execute on function private.claim_chat_jobs_counted(text, integer, integer) to service_role;
