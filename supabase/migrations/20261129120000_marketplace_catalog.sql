-- Marketplace catalog: the curated agents anyone may browse, and their private system prompts.
--
-- Conventions for every migration in this project:
--   * exposed tables live in `public`, have RLS on, and get explicit grants after revoking the
--     defaults Supabase hands out to anon/authenticated;
--   * private data lives in `private`, a schema PostgREST does not expose; the API roles get no
--     table privileges there, only EXECUTE on the few functions granted to them;
--   * policies call (select auth.uid()) / (select auth.jwt()) so Postgres evaluates them once per query.

create schema if not exists private;
revoke all on schema private from public, anon, authenticated;
grant usage on schema private to service_role;

-- Keeps updated_at honest on every table that has one.
create or replace function private.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- Tags join the full-text document; array_to_string is only STABLE, a generated column needs IMMUTABLE.
create or replace function private.tags_document(tags text[])
returns text
language sql
immutable
parallel safe
set search_path = ''
as $$
  select coalesce(array_to_string(tags, ' '), '')
$$;

create table public.marketplace_agents (
  id uuid primary key default gen_random_uuid(),
  slug text not null unique
    constraint marketplace_agents_slug_format check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(slug) <= 64),
  name text not null
    constraint marketplace_agents_name_length check (length(btrim(name)) between 1 and 80),
  tagline text not null default ''
    constraint marketplace_agents_tagline_length check (length(tagline) <= 140),
  description text not null default ''
    constraint marketplace_agents_description_length check (length(description) <= 4000),
  category text not null
    constraint marketplace_agents_category_format check (category ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
  tags text[] not null default '{}'
    constraint marketplace_agents_tags_count check (cardinality(tags) <= 12),
  kind text not null
    constraint marketplace_agents_kind check (kind in ('chat', 'content', 'support')),
  pricing_model text not null
    constraint marketplace_agents_pricing_model
      check (pricing_model in ('free', 'subscription', 'pay_per_use', 'one_time')),
  price_cents integer not null default 0
    constraint marketplace_agents_price_nonnegative check (price_cents >= 0),
  currency text not null default 'USD'
    constraint marketplace_agents_currency_format check (currency ~ '^[A-Z]{3}$'),
  config_schema jsonb not null default '{"type": "object"}'::jsonb
    constraint marketplace_agents_config_schema_object check (jsonb_typeof(config_schema) = 'object'),
  default_config jsonb not null default '{}'::jsonb
    constraint marketplace_agents_default_config_object check (jsonb_typeof(default_config) = 'object'),
  example_prompts text[] not null default '{}',
  model text not null default 'gpt-4o-mini'
    constraint marketplace_agents_model_length check (length(model) between 1 and 100),
  rate_limit_per_minute integer not null default 30
    constraint marketplace_agents_rate_limit_range check (rate_limit_per_minute between 1 and 10000),
  icon text
    constraint marketplace_agents_icon_length check (length(icon) <= 16),
  featured boolean not null default false,
  is_published boolean not null default false,
  deploy_count integer not null default 0
    constraint marketplace_agents_deploy_count_nonnegative check (deploy_count >= 0),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  search tsvector generated always as (
    setweight(to_tsvector('english'::regconfig, coalesce(name, '')), 'A')
    || setweight(to_tsvector('english'::regconfig, private.tags_document(tags)), 'A')
    || setweight(to_tsvector('english'::regconfig, coalesce(tagline, '')), 'B')
    || setweight(to_tsvector('english'::regconfig, coalesce(category, '')), 'B')
    || setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'C')
  ) stored,
  constraint marketplace_agents_free_is_free check ((pricing_model = 'free') = (price_cents = 0))
);

comment on table public.marketplace_agents is
  'The curated catalog. Published rows are readable by anyone (anon included); writes are operator-only.';
comment on column public.marketplace_agents.deploy_count is
  'Live (not deleted) deployments of this agent, maintained by triggers on agent_deployments.';

create index marketplace_agents_search_idx on public.marketplace_agents using gin (search);
create index marketplace_agents_tags_idx on public.marketplace_agents using gin (tags);
create index marketplace_agents_published_category_idx
  on public.marketplace_agents (category) where is_published;
create index marketplace_agents_published_popular_idx
  on public.marketplace_agents (deploy_count desc, name) where is_published;
create index marketplace_agents_published_newest_idx
  on public.marketplace_agents (created_at desc) where is_published;
create index marketplace_agents_is_published_idx on public.marketplace_agents (is_published);
create index marketplace_agents_created_by_idx on public.marketplace_agents (created_by);

create trigger marketplace_agents_set_updated_at
  before update on public.marketplace_agents
  for each row execute function private.set_updated_at();

alter table public.marketplace_agents enable row level security;

revoke all on table public.marketplace_agents from public, anon, authenticated;
grant select on table public.marketplace_agents to anon, authenticated;
grant all on table public.marketplace_agents to service_role;

create policy "published agents are visible to everyone"
  on public.marketplace_agents
  for select
  to anon, authenticated
  using (is_published);

create policy "admins see unpublished agents"
  on public.marketplace_agents
  for select
  to authenticated
  using (((select auth.jwt()) -> 'app_metadata' ->> 'role') = 'admin');

-- An author's system prompt is the product's secret sauce: never exposed, read by the worker only.
create table private.agent_prompts (
  agent_id uuid primary key references public.marketplace_agents (id) on delete cascade,
  system_prompt text not null
    constraint agent_prompts_system_prompt_length check (length(system_prompt) between 1 and 20000),
  updated_at timestamptz not null default now()
);

create trigger agent_prompts_set_updated_at
  before update on private.agent_prompts
  for each row execute function private.set_updated_at();

alter table private.agent_prompts enable row level security;
revoke all on table private.agent_prompts from public, anon, authenticated;
grant all on table private.agent_prompts to service_role;
