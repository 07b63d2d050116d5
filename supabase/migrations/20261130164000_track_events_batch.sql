-- Telemetry in one statement per caller: the functions' EventSink (agentmarket/services/telemetry.py)
-- writes a second's worth of views and searches as one JSON array instead of one
-- private.track_event call per event. Same rules as track_event: the user is the caller's own
-- (from the claims), the time is the database's, names and properties are checked by the table.

create or replace function private.track_events(p_events jsonb)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
begin
  if jsonb_typeof(p_events) is distinct from 'array' then
    raise exception 'track_events expects a JSON array of events'
      using errcode = '22023';
  end if;
  if jsonb_array_length(p_events) > 10000 then
    raise exception 'at most 10000 events per call'
      using errcode = '22023';
  end if;
  insert into private.telemetry_events (name, user_id, agent_id, deployment_id, properties)
  select e ->> 'name',
         (select auth.uid()),
         (e ->> 'agent_id')::uuid,
         (e ->> 'deployment_id')::uuid,
         coalesce(e -> 'properties', '{}'::jsonb)
    from jsonb_array_elements(p_events) as e;
  get diagnostics v_count = row_count;
  return v_count;
end
$$;

revoke all on function private.track_events(jsonb) from public;
grant execute on function private.track_events(jsonb) to anon, authenticated, service_role;
