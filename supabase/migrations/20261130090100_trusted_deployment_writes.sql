-- Deployment writes that do not trust their caller.
--
-- private.create_deployment / update_deployment are SECURITY DEFINER and executable by
-- `authenticated`. Until now they took the active-deployment cap, the status and the (supposedly
-- validated) config as arguments, so anyone holding a session as `authenticated` could create an
-- active deployment with any config and any cap. Now they take only what the caller may choose and
-- read everything else from places the caller cannot reach:
--
--   * the cap comes from private.app_settings (one row, service only). `agentmarket migrate`
--     stores MAX_ACTIVE_DEPLOYMENTS there on every run; operators may also update it directly;
--   * the config is validated by the HTTP functions against the agent's JSON Schema (Python), which
--     then sign what they validated: HMAC-SHA256, keyed with private.api_signing_key (32 random
--     bytes generated here, readable only through private.api_signing_key(), which only the API
--     login agentmarket_api may execute; anon and authenticated may not), over
--       operation ('create' | 'update'), the caller's user id (from the claims, never an argument),
--       the agent id (create) or deployment id (update), the list of required fields still missing,
--       and the exact config text sent.
--     The functions recompute the HMAC and refuse a mismatch (SQLSTATE AMSIG), then derive the
--     status themselves: `configuring` while required fields are missing (status_reason names
--     them), otherwise `active`; `paused` only when the caller asks for it (update). A signature
--     is only good for the same user, operation, agent/deployment, config and missing list: it can
--     at most re-apply that same validated config. The payload encoding is
--     private.signed_deployment_payload() (netstrings, so no field can run into the next), mirrored
--     by agentmarket/signing.py.
--   What this does not stop: code running *as the API login* (e.g. an SQL injection in the
--   functions) can read the key, just as it can choose any user's claims; the least-privilege login
--   bounds what it can do to what anon and authenticated may do plus forging such signatures.
--   Rotating the key: `update private.api_signing_key set key = extensions.gen_random_bytes(32)`,
--   then restart the functions (each instance reads the key once).
--
-- Our SQLSTATEs: AMNF1 agent not found, AMLIM deployment limit reached, AMSIG the signature does not
-- match (or a validated config is required), AMCFG activation of a deployment that is not configured.

create extension if not exists pgcrypto with schema extensions;

-- Settings the definer functions enforce --------------------------------------------------------------
create table private.app_settings (
  id boolean primary key default true
    constraint app_settings_single_row check (id),
  max_active_deployments integer not null default 10
    constraint app_settings_max_active_deployments_range check (max_active_deployments between 1 and 1000),
  updated_at timestamptz not null default now()
);

comment on table private.app_settings is
  'Limits enforced in SQL (one row). agentmarket migrate stores MAX_ACTIVE_DEPLOYMENTS here.';

insert into private.app_settings default values;

create trigger app_settings_set_updated_at
  before update on private.app_settings
  for each row execute function private.set_updated_at();

alter table private.app_settings enable row level security;
revoke all on table private.app_settings from public, anon, authenticated;
grant all on table private.app_settings to service_role;

-- The key the HTTP functions sign validated configurations with ---------------------------------------
create table private.api_signing_key (
  id boolean primary key default true
    constraint api_signing_key_single_row check (id),
  key bytea not null default extensions.gen_random_bytes(32)
    constraint api_signing_key_length check (length(key) >= 32),
  created_at timestamptz not null default now()
);

comment on table private.api_signing_key is
  'HMAC-SHA256 key for validated deployment configs; read by the API login through private.api_signing_key().';

insert into private.api_signing_key default values;

alter table private.api_signing_key enable row level security;
revoke all on table private.api_signing_key from public, anon, authenticated, service_role;

create or replace function private.api_signing_key()
returns bytea
language sql
stable
security definer
set search_path = ''
as $$
  select k.key from private.api_signing_key k
$$;

-- netstring(part) = length ':' part ','; the missing fields are one part holding their netstrings.
create or replace function private.signed_deployment_payload(
  p_operation text,
  p_user_id uuid,
  p_target_id uuid,
  p_config text,
  p_missing text[]
)
returns text
language sql
immutable
set search_path = ''
as $$
  select string_agg(length(part)::text || ':' || part || ',', '' order by ord)
    from unnest(array[
           'agentmarket.deployment.v1',
           p_operation,
           p_user_id::text,
           p_target_id::text,
           (select coalesce(string_agg(length(m)::text || ':' || m || ',', '' order by i), '')
              from unnest(coalesce(p_missing, '{}'::text[])) with ordinality as u(m, i)),
           p_config
         ]) with ordinality as t(part, ord)
$$;

create or replace function private.deployment_signature_valid(
  p_operation text,
  p_user_id uuid,
  p_target_id uuid,
  p_config text,
  p_missing text[],
  p_signature bytea
)
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce(
    p_config is not null
    and p_signature is not null
    and extensions.hmac(
          convert_to(private.signed_deployment_payload(p_operation, p_user_id, p_target_id, p_config, p_missing), 'UTF8'),
          (select k.key from private.api_signing_key k),
          'sha256') = p_signature,
    false)
$$;

-- The status a validated config earns, and why.
create or replace function private.readiness(p_missing text[], out status text, out status_reason text)
language sql
immutable
set search_path = ''
as $$
  select case when cardinality(coalesce(p_missing, '{}'::text[])) > 0 then 'configuring' else 'active' end,
         case when cardinality(coalesce(p_missing, '{}'::text[])) > 0
              then 'missing required configuration: ' || array_to_string(p_missing, ', ') end
$$;

-- The replaced functions took caps, status and config on trust.
drop function private.create_deployment(uuid, text, jsonb, text, text, integer);
drop function private.update_deployment(uuid, text, jsonb, text, text, integer);

create function private.create_deployment(
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
  ready record;
  created public.agent_deployments;
begin
  if not private.deployment_signature_valid('create', uid, p_agent_id, p_config, p_missing, p_signature) then
    raise exception 'configuration signature does not match' using errcode = 'AMSIG';
  end if;
  if not exists (select 1 from public.marketplace_agents where id = p_agent_id and is_published) then
    raise exception 'agent not found' using errcode = 'AMNF1';
  end if;
  -- Serialise this user's deploys so the cap holds under concurrency.
  perform pg_advisory_xact_lock(hashtextextended('agentmarket.deploy:' || uid::text, 0));
  if private.count_active_deployments(uid)
     >= (select s.max_active_deployments from private.app_settings s) then
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
create function private.update_deployment(
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

-- Closed to PUBLIC, then exactly what is needed.
revoke all on function private.api_signing_key() from public, anon, authenticated;
revoke all on function private.signed_deployment_payload(text, uuid, uuid, text, text[]) from public, anon, authenticated;
revoke all on function private.deployment_signature_valid(text, uuid, uuid, text, text[], bytea) from public, anon, authenticated;
revoke all on function private.readiness(text[]) from public, anon, authenticated;
revoke all on function private.create_deployment(uuid, text, text, text[], bytea) from public, anon;
revoke all on function private.update_deployment(uuid, text, text, text[], bytea, text) from public, anon;
grant execute on function private.api_signing_key() to agentmarket_api, service_role;
grant execute on function private.create_deployment(uuid, text, text, text[], bytea) to authenticated;
grant execute on function private.update_deployment(uuid, text, text, text[], bytea, text) to authenticated;
grant execute on all functions in schema private to service_role;
