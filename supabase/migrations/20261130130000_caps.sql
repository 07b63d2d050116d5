-- Caps on what a user can otherwise grow without bound (docs/api.md#limits), checked inside the
-- SECURITY DEFINER functions, in the same transaction as the write: no extra round trip, and a
-- refusal raises, so nothing is stored (and no quota taken earlier in the transaction is kept).
--
--   * private.create_conversation: the user's conversation rate (AMRLM, policy "conversations",
--     private.app_settings.conversations_per_minute). A chat send that starts a conversation does
--     not count here: it is already under the chat rate.
--   * private.create_deployment: the user's deploy rate (AMRLM, policy "deploy",
--     deploy_per_minute), then the cap on deployments in total, paused and configuring ones
--     included, soft-deleted ones not (AMDPT, 409, max_deployments_per_user), then the existing
--     cap on active ones (AMLIM).
--   * private.update_deployment: every call counts against the same deploy rate, whatever it
--     changes (rename, reconfigure, pause, resume).
--
-- `create or replace` with the same signatures: the functions keep their owner, their grants
-- (authenticated and service_role, never PUBLIC) and SECURITY DEFINER. The count of a user's
-- deployments uses agent_deployments_user_idx (user_id, … where deleted_at is null).

create or replace function private.create_conversation(p_deployment_id uuid, p_title text)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  conv uuid;
begin
  if not exists (
    select 1 from public.agent_deployments d
     where d.id = p_deployment_id and d.user_id = uid and d.deleted_at is null
  ) then
    raise exception 'deployment not found' using errcode = 'AMNF2';
  end if;
  perform private.rate_limit_check('conversations', 'conversations:' || uid::text,
                                   (select s.conversations_per_minute from private.app_settings s));
  insert into public.agent_conversations (deployment_id, user_id, title)
  values (p_deployment_id, uid, nullif(btrim(p_title), ''))
  returning id into conv;
  return conv;
end
$$;

create or replace function private.create_deployment(
  p_agent_id uuid,
  p_name text,
  p_config text,
  p_missing text[],
  p_signature bytea
)
returns public.agent_deployments
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  cfg private.app_settings;
  ready record;
  total integer;
  created public.agent_deployments;
begin
  if not private.deployment_signature_valid('create', uid, p_agent_id, p_config, p_missing, p_signature) then
    raise exception 'configuration signature does not match' using errcode = 'AMSIG';
  end if;
  if not exists (select 1 from public.marketplace_agents where id = p_agent_id and is_published) then
    raise exception 'agent not found' using errcode = 'AMNF1';
  end if;
  select * into cfg from private.app_settings;
  perform private.rate_limit_check('deploy', 'deploy:' || uid::text, cfg.deploy_per_minute);
  -- Serialise this user's deploys so the caps hold under concurrency.
  perform pg_advisory_xact_lock(hashtextextended('agentmarket.deploy:' || uid::text, 0));
  select count(*) into total
    from public.agent_deployments d
   where d.user_id = uid and d.deleted_at is null;
  if total >= cfg.max_deployments_per_user then
    -- Only a delete makes room: no time to wait for, so the shortest honest hint.
    perform private.raise_limit('AMDPT', 'too many deployments', 'deployments',
                                cfg.max_deployments_per_user, 0, 1);
  end if;
  if private.count_active_deployments(uid) >= cfg.max_active_deployments then
    raise exception 'deployment limit reached' using errcode = 'AMLIM';
  end if;
  select * into ready from private.readiness(p_missing);
  insert into public.agent_deployments (user_id, agent_id, name, config, status, status_reason)
  values (uid, p_agent_id, p_name, p_config::jsonb, ready.status, ready.status_reason)
  returning * into created;
  return created;
end
$$;

-- p_name null keeps the name. p_config (with p_missing and p_signature) replaces the config and, unless
-- the deployment stays paused, sets the status it earns. p_status: null (no change), 'paused', or
-- 'active' (resume or activate: needs a freshly validated config without missing fields).
-- Every call takes one request from the caller's deploy rate.
create or replace function private.update_deployment(
  p_id uuid,
  p_name text,
  p_config text,
  p_missing text[],
  p_signature bytea,
  p_status text
)
returns public.agent_deployments
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  current public.agent_deployments;
  updated public.agent_deployments;
  ready record;
  new_config jsonb;
  new_status text;
  new_reason text;
begin
  if p_status is not null and p_status not in ('active', 'paused') then
    raise exception 'status must be active or paused' using errcode = '22023';
  end if;
  perform private.rate_limit_check('deploy', 'deploy:' || uid::text,
                                   (select s.deploy_per_minute from private.app_settings s));
  perform pg_advisory_xact_lock(hashtextextended('agentmarket.deploy:' || uid::text, 0));
  select * into current
    from public.agent_deployments
   where id = p_id and user_id = uid and deleted_at is null
     for update;
  if not found then
    return null;
  end if;
  new_config := current.config;
  new_status := current.status;
  new_reason := current.status_reason;
  if p_config is not null then
    if not private.deployment_signature_valid('update', uid, p_id, p_config, p_missing, p_signature) then
      raise exception 'configuration signature does not match' using errcode = 'AMSIG';
    end if;
    select * into ready from private.readiness(p_missing);
    if p_status = 'active' and ready.status <> 'active' then
      raise exception 'deployment not configured: %', ready.status_reason
        using errcode = 'AMCFG', detail = ready.status_reason;
    end if;
    new_config := p_config::jsonb;
    if current.status <> 'paused' or p_status = 'active' then
      new_status := ready.status;
      new_reason := ready.status_reason;
    end if;
  elsif p_status = 'active' and current.status in ('paused', 'configuring') then
    raise exception 'activating needs a validated configuration' using errcode = 'AMSIG';
  end if;
  if p_status = 'paused' then
    new_status := 'paused';
    new_reason := null;
  end if;
  if current.status = 'paused' and new_status <> 'paused'
     and private.count_active_deployments(uid)
         >= (select s.max_active_deployments from private.app_settings s) then
    raise exception 'deployment limit reached' using errcode = 'AMLIM';
  end if;
  update public.agent_deployments
     set name = coalesce(p_name, current.name),
         config = new_config,
         status = new_status,
         status_reason = new_reason
   where id = p_id
  returning * into updated;
  return updated;
end
$$;
