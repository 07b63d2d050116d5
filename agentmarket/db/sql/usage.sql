-- Usage (agentmarket.services.usage), as the signed-in caller: the caller's limits and where they
-- stand, in one round trip through a private SECURITY DEFINER function that reads only the
-- caller's own rows.

-- name: usage_mine
-- The caller's limits and usage as one JSON object (chat, in_flight, deployments,
-- platform_tokens, month).
select private.my_usage() as usage;
