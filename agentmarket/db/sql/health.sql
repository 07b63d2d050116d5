-- Readiness (agentmarket.services.health), as the API login itself, outside any caller's
-- transaction: it may read the applied versions through this one definer function, and nothing
-- else of the history or of any table.

-- name: health_applied_migrations
-- The migration versions applied to this database.
select private.applied_migrations();
