-- What the HTTP functions (and PostgREST clients) need beyond plain tables:
--   * public.search_agents(...): the catalog search, SECURITY INVOKER so RLS decides what anon sees;
--   * private SECURITY DEFINER functions that perform the writes clients may not do directly
--     (deploy, reconfigure, delete, store encrypted secrets, record telemetry). They check
--     (select auth.uid()) themselves, pin search_path, and are executable only by the API roles that
--     need them. `private` is not exposed by PostgREST, so only the functions can call them.
--   Errors they raise carry our own SQLSTATEs: AMNF1 agent not found, AMNF2 deployment not found,
--   AMLIM deployment limit reached.

create extension if not exists pg_trgm with schema extensions;

-- Typo-tolerant matching on the short fields (name, tags, category).
create or replace function private.agent_keywords(name text, tags text[], category text)
returns text
language sql
immutable
parallel safe
set search_path = ''
as $$
  select lower(coalesce(name, '') || ' ' || coalesce(array_to_string(tags, ' '), '') || ' '
               || replace(coalesce(category, ''), '-', ' '))
$$;

alter table public.marketplace_agents
  add column keywords text generated always as (private.agent_keywords(name, tags, category)) stored;

create index marketplace_agents_keywords_trgm_idx
  on public.marketplace_agents using gin (keywords extensions.gin_trgm_ops);

-- Every word of the query as a prefix, all required: "cust supp" finds "customer support".
create or replace function public.agent_search_query(q text)
returns tsquery
language sql
immutable
parallel safe
set search_path = ''
as $$
  select case
    when coalesce(btrim(q), '') = '' then null
    else (
      select to_tsquery('english'::regconfig, string_agg(quote_literal(w) || ':*', ' & '))
        from regexp_split_to_table(lower(left(q, 200)), '[^[:alnum:]]+') as w
       where w <> ''
    )
  end
$$;

comment on function public.agent_search_query(text) is
  'Prefix full-text query for the catalog: every word must match the start of a word.';

create or replace function public.search_agents(
  q text default null,
  category text default null,
  pricing text default null,
  tag text default null,
  sort text default null,
  max_results integer default 20,
  skip integer default 0
)
returns table (
  id uuid,
  slug text,
  name text,
  tagline text,
  description text,
  category text,
  tags text[],
  kind text,
  pricing_model text,
  price_cents integer,
  currency text,
  icon text,
  featured boolean,
  deploy_count integer,
  created_at timestamptz,
  updated_at timestamptz,
  rank real,
  total_count bigint
)
language sql
stable
security invoker
set search_path = ''
as $$
  with params as (
    select public.agent_search_query(q) as tsq,
           lower(nullif(btrim(q), '')) as words,
           coalesce(nullif(sort, ''), case when nullif(btrim(q), '') is null then 'popular' else 'relevance' end) as sort_by
  ),
  matches as (
    select a.*,
           case
             when p.words is null then 0::real
             else (coalesce(ts_rank_cd(a.search, p.tsq), 0)
                   + extensions.word_similarity(p.words, a.keywords))::real
           end as rank,
           p.sort_by
      from public.marketplace_agents a
     cross join params p
     where a.is_published
       and (search_agents.category is null or a.category = search_agents.category)
       and (pricing is null or a.pricing_model = pricing)
       and (tag is null or a.tags @> array[lower(tag)])
       and (p.words is null
            or (p.tsq is not null and a.search @@ p.tsq)
            or extensions.word_similarity(p.words, a.keywords) >= 0.5)
  )
  select m.id, m.slug, m.name, m.tagline, m.description, m.category, m.tags, m.kind,
         m.pricing_model, m.price_cents, m.currency, m.icon, m.featured, m.deploy_count,
         m.created_at, m.updated_at, m.rank, count(*) over () as total_count
    from matches m
   order by
     case when m.sort_by = 'relevance' then m.rank end desc nulls last,
     case when m.sort_by = 'popular' then m.deploy_count end desc nulls last,
     case when m.sort_by = 'popular' then m.featured::int end desc nulls last,
     case when m.sort_by = 'newest' then m.created_at end desc nulls last,
     m.name asc,
     m.id asc
   limit least(greatest(coalesce(max_results, 20), 1), 100)
  offset greatest(coalesce(skip, 0), 0)
$$;

comment on function public.search_agents(text, text, text, text, text, integer, integer) is
  'Catalog search shared by GET /api/marketplace/agents and PostgREST (rpc/search_agents): '
  'prefix full-text + typo-tolerant trigram match, filters, sort popular|newest|name|relevance.';

revoke all on function public.agent_search_query(text) from public;
revoke all on function public.search_agents(text, text, text, text, text, integer, integer) from public;
grant execute on function public.agent_search_query(text) to anon, authenticated, service_role;
grant execute on function public.search_agents(text, text, text, text, text, integer, integer)
  to anon, authenticated, service_role;

-- The caller's user id; raises for anonymous callers.
create or replace function private.require_uid()
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  uid uuid := (select auth.uid());
begin
  if uid is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  return uid;
end
$$;

-- Deployments a user may hold at once ("active": neither paused nor deleted).
create or replace function private.count_active_deployments(p_user uuid)
returns integer
language sql
stable
set search_path = ''
as $$
  select count(*)::integer
    from public.agent_deployments
   where user_id = p_user and deleted_at is null and status <> 'paused'
$$;

create or replace function private.create_deployment(
  p_agent_id uuid,
  p_name text,
  p_config jsonb,
  p_status text,
  p_status_reason text,
  p_max_active integer
)
returns public.agent_deployments
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  created public.agent_deployments;
begin
  if not exists (select 1 from public.marketplace_agents where id = p_agent_id and is_published) then
    raise exception 'agent not found' using errcode = 'AMNF1';
  end if;
  -- Serialise this user's deploys so the cap holds under concurrency.
  perform pg_advisory_xact_lock(hashtextextended('agentmarket.deploy:' || uid::text, 0));
  if p_status <> 'paused' and private.count_active_deployments(uid) >= p_max_active then
    raise exception 'deployment limit reached' using errcode = 'AMLIM';
  end if;
  insert into public.agent_deployments (user_id, agent_id, name, config, status, status_reason)
  values (uid, p_agent_id, p_name, p_config, p_status, p_status_reason)
  returning * into created;
  return created;
end
$$;

create or replace function private.update_deployment(
  p_id uuid,
  p_name text,
  p_config jsonb,
  p_status text,
  p_status_reason text,
  p_max_active integer
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
begin
  perform pg_advisory_xact_lock(hashtextextended('agentmarket.deploy:' || uid::text, 0));
  select * into current
    from public.agent_deployments
   where id = p_id and user_id = uid and deleted_at is null
     for update;
  if not found then
    return null;
  end if;
  if current.status = 'paused' and p_status <> 'paused'
     and private.count_active_deployments(uid) >= p_max_active then
    raise exception 'deployment limit reached' using errcode = 'AMLIM';
  end if;
  update public.agent_deployments
     set name = p_name,
         config = p_config,
         status = p_status,
         status_reason = p_status_reason
   where id = p_id
  returning * into updated;
  return updated;
end
$$;

create or replace function private.delete_deployment(p_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
begin
  update public.agent_deployments
     set deleted_at = now(), status = 'paused', status_reason = 'deleted'
   where id = p_id and user_id = uid and deleted_at is null;
  if not found then
    return false;
  end if;
  -- The user's keys go with the deployment.
  delete from private.deployment_secrets where deployment_id = p_id;
  return true;
end
$$;

create or replace function private.put_deployment_secret(
  p_deployment_id uuid,
  p_field text,
  p_key_id text,
  p_ciphertext bytea,
  p_hint text
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
begin
  if not exists (
    select 1 from public.agent_deployments
     where id = p_deployment_id and user_id = uid and deleted_at is null
  ) then
    raise exception 'deployment not found' using errcode = 'AMNF2';
  end if;
  insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint)
  values (p_deployment_id, p_field, p_key_id, p_ciphertext, p_hint)
  on conflict (deployment_id, field) do update
     set key_id = excluded.key_id, ciphertext = excluded.ciphertext, hint = excluded.hint;
end
$$;

-- Masked hints of a deployment's stored secrets, for its owner (never the ciphertext).
create or replace function private.deployment_secret_hints(p_deployment_ids uuid[])
returns table (deployment_id uuid, field text, hint text)
language sql
stable
security definer
set search_path = ''
as $$
  select s.deployment_id, s.field, s.hint
    from private.deployment_secrets s
    join public.agent_deployments d on d.id = s.deployment_id
   where s.deployment_id = any (p_deployment_ids)
     and d.user_id = (select auth.uid())
     and d.deleted_at is null
   order by s.deployment_id, s.field
$$;

-- Telemetry from the request path; the user is taken from the claims, never from the caller.
create or replace function private.track_event(
  p_name text,
  p_agent_id uuid,
  p_deployment_id uuid,
  p_properties jsonb
)
returns void
language sql
security definer
set search_path = ''
as $$
  insert into private.telemetry_events (name, user_id, agent_id, deployment_id, properties)
  values (p_name, (select auth.uid()), p_agent_id, p_deployment_id, coalesce(p_properties, '{}'::jsonb))
$$;

-- Functions are executable by PUBLIC by default: close that, then open exactly what is needed.
-- (A per-schema `alter default privileges` cannot take PUBLIC's EXECUTE away, and a global one
-- would also strip it from every extension installed later, so each migration that creates a
-- function in `private` revokes it itself; a pgTAP test fails if one forgets.)
revoke all on all functions in schema private from public, anon, authenticated;
grant usage on schema private to anon, authenticated;
grant execute on function private.create_deployment(uuid, text, jsonb, text, text, integer) to authenticated;
grant execute on function private.update_deployment(uuid, text, jsonb, text, text, integer) to authenticated;
grant execute on function private.delete_deployment(uuid) to authenticated;
grant execute on function private.put_deployment_secret(uuid, text, text, bytea, text) to authenticated;
grant execute on function private.deployment_secret_hints(uuid[]) to authenticated;
grant execute on function private.track_event(text, uuid, uuid, jsonb) to anon, authenticated;
grant execute on all functions in schema private to service_role;
