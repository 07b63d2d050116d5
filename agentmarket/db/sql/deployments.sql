-- Deployments (agentmarket.services.deployments). Reads run as the caller under RLS; writes go
-- through private SECURITY DEFINER functions that check auth.uid() themselves.

-- name: deployment_agent_for_deploy
-- The published agent to deploy, by id or by slug (the other parameter null).
select id, slug, name, config_schema, default_config
  from public.marketplace_agents
 where (id = %(id)s or slug = %(slug)s) and is_published;

-- name: deployments_list
-- The caller's live deployments with their agents, newest first.
select d.id, d.agent_id, d.name, d.config, d.status, d.status_reason, d.created_at,
       d.updated_at, d.last_active_at,
       a.slug as agent_slug, a.name as agent_name, a.kind as agent_kind, a.icon as agent_icon,
       a.config_schema, a.default_config
  from public.agent_deployments d
  left join public.marketplace_agents a on a.id = d.agent_id
 order by d.created_at desc, d.id desc;

-- name: deployment_one
-- One of the caller's deployments with its agent.
select d.id, d.agent_id, d.name, d.config, d.status, d.status_reason, d.created_at,
       d.updated_at, d.last_active_at,
       a.slug as agent_slug, a.name as agent_name, a.kind as agent_kind, a.icon as agent_icon,
       a.config_schema, a.default_config
  from public.agent_deployments d
  left join public.marketplace_agents a on a.id = d.agent_id
 where d.id = %(id)s;

-- name: deployment_secret_hints
-- The masked hints of the deployments' stored secrets.
select deployment_id, field, hint from private.deployment_secret_hints(%(ids)s);

-- name: deployment_create
-- Create a deployment from a signed, validated config; the database derives its status.
select * from private.create_deployment(
         %(agent_id)s, %(name)s, %(config)s, %(missing)s, %(signature)s);

-- name: deployment_update
-- Rename, reconfigure (signed, validated config or null), pause or resume.
select * from private.update_deployment(
         %(id)s, %(name)s, %(config)s, %(missing)s, %(signature)s, %(status)s);

-- name: deployment_delete
-- Soft-delete a deployment and destroy its stored secrets; true when there was one.
select private.delete_deployment(%(id)s);

-- name: deployment_put_secret
-- Store one sealed secret of a deployment.
select private.put_deployment_secret(
         %(deployment_id)s, %(field)s, %(key_id)s, %(ciphertext)s, %(hint)s);
