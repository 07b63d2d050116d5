-- Deployments: an agent placed in a user's workspace with their configuration.
-- Clients may read their own rows; every write goes through the functions (config validation,
-- secret encryption, caps), which run as the user or through private SECURITY DEFINER functions.

create table public.agent_deployments (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  agent_id uuid not null references public.marketplace_agents (id) on delete restrict,
  name text not null
    constraint agent_deployments_name_length check (length(btrim(name)) between 1 and 100),
  config jsonb not null default '{}'::jsonb
    constraint agent_deployments_config_object check (jsonb_typeof(config) = 'object'),
  status text not null default 'configuring'
    constraint agent_deployments_status check (status in ('configuring', 'active', 'paused', 'error')),
  status_reason text
    constraint agent_deployments_status_reason_length check (length(status_reason) <= 500),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_active_at timestamptz,
  deleted_at timestamptz,
  -- Lets children carry (deployment_id, user_id) so a row can never point at another user's deployment.
  constraint agent_deployments_id_user_key unique (id, user_id)
);

comment on column public.agent_deployments.config is
  'Validated, non-secret configuration. Secret (writeOnly) fields live encrypted in private.deployment_secrets.';

create index agent_deployments_user_idx
  on public.agent_deployments (user_id, created_at desc) where deleted_at is null;
create index agent_deployments_user_id_idx on public.agent_deployments (user_id);
create index agent_deployments_agent_idx on public.agent_deployments (agent_id);

create trigger agent_deployments_set_updated_at
  before update on public.agent_deployments
  for each row execute function private.set_updated_at();

-- deploy_count on the catalog counts live deployments. The trigger runs as its owner because the
-- deploying user has no write access to the catalog.
create or replace function private.maintain_deploy_count()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  was_live boolean := tg_op <> 'INSERT' and old.deleted_at is null;
  is_live boolean := tg_op <> 'DELETE' and new.deleted_at is null;
begin
  if tg_op = 'UPDATE' and old.agent_id <> new.agent_id then
    raise exception 'a deployment cannot change its agent' using errcode = 'check_violation';
  end if;
  if is_live and not was_live then
    update public.marketplace_agents
       set deploy_count = deploy_count + 1
     where id = new.agent_id;
  elsif was_live and not is_live then
    update public.marketplace_agents
       set deploy_count = greatest(deploy_count - 1, 0)
     where id = old.agent_id;
  end if;
  return null;
end
$$;

revoke all on function private.maintain_deploy_count() from public;

create trigger agent_deployments_deploy_count
  after insert or update of deleted_at, agent_id or delete on public.agent_deployments
  for each row execute function private.maintain_deploy_count();

alter table public.agent_deployments enable row level security;

revoke all on table public.agent_deployments from public, anon, authenticated;
grant select on table public.agent_deployments to authenticated;
grant all on table public.agent_deployments to service_role;

create policy "owners read their live deployments"
  on public.agent_deployments
  for select
  to authenticated
  using (user_id = (select auth.uid()) and deleted_at is null);

-- Secret configuration fields (the user's own model key, webhook tokens), AES-GCM encrypted by the
-- application with a key from the environment; key_id names the key so keys can rotate.
create table private.deployment_secrets (
  deployment_id uuid not null references public.agent_deployments (id) on delete cascade,
  field text not null
    constraint deployment_secrets_field_format check (field ~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$'),
  key_id text not null
    constraint deployment_secrets_key_id_length check (length(key_id) between 1 and 64),
  ciphertext bytea not null,
  hint text not null
    constraint deployment_secrets_hint_length check (length(hint) <= 32),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (deployment_id, field)
);

comment on column private.deployment_secrets.ciphertext is '12-byte nonce || AES-256-GCM ciphertext and tag.';
comment on column private.deployment_secrets.hint is 'The masked form shown back to the owner, e.g. sk-…abcd.';

create index deployment_secrets_key_id_idx on private.deployment_secrets (key_id);

create trigger deployment_secrets_set_updated_at
  before update on private.deployment_secrets
  for each row execute function private.set_updated_at();

alter table private.deployment_secrets enable row level security;
revoke all on table private.deployment_secrets from public, anon, authenticated;
grant all on table private.deployment_secrets to service_role;
