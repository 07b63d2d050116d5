-- Product events (agentmarket.services.telemetry): `track` and `EventSink` share this insert.

-- name: telemetry_track_event
-- Record one product event as the caller (the database takes the user from the claims and
-- stamps the time).
select private.track_event(%(name)s, %(agent_id)s, %(deployment_id)s, %(properties)s);

-- name: telemetry_track_events
-- Record a batch of product events (a JSON array of {name, agent_id, deployment_id, properties})
-- as the caller, in one statement.
select private.track_events(%(events)s::jsonb);
