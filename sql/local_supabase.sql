-- What a hosted Supabase project already has and a plain PostgreSQL lacks.
--
-- Applied by `agentmarket migrate` (and ./scripts/dev, ./scripts/test) before the migrations when
-- the database is a plain PostgreSQL. Every statement is idempotent and leaves existing objects
-- alone, so on a real Supabase project (where all of this exists already) it changes nothing.
-- The function bodies mirror Supabase's own definitions so RLS policies behave the same here.

-- Roles -------------------------------------------------------------------------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    -- PostgREST logs in as authenticator and switches to one of the three API roles per request.
    -- Locally it has no password: nothing logs in as it over TCP.
    create role authenticator login noinherit;
  end if;
end
$$;

do $$
begin
  if not pg_has_role('authenticator', 'anon', 'member') then
    grant anon, authenticated, service_role to authenticator;
  end if;
end
$$;

-- Schemas -----------------------------------------------------------------------------------------
create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

-- auth.users: the columns our schema and tools use, shaped like GoTrue's table.
do $outer$
begin
  if to_regclass('auth.users') is null then
    execute $ddl$create table auth.users (
  id uuid primary key,
  instance_id uuid,
  aud varchar(255) default 'authenticated',
  role varchar(255) default 'authenticated',
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  is_super_admin boolean,
  is_anonymous boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
)$ddl$;
    execute $ddl$create unique index users_email_partial_key
  on auth.users (email) where (is_anonymous = false)$ddl$;
    grant select on auth.users to service_role;
  end if;
end
$outer$;

-- The request's JWT claims, as PostgREST sets them (request.jwt.claims, and the older
-- request.jwt.claim.* settings). Same definitions as Supabase's auth schema.
-- Created only where missing: on Supabase these belong to the auth service and stay untouched.
do $outer$
begin
  if to_regprocedure('auth.uid()') is null then
    execute $ddl$create function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$$ddl$;
  end if;
  if to_regprocedure('auth.role()') is null then
    execute $ddl$create function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$$ddl$;
  end if;
  if to_regprocedure('auth.email()') is null then
    execute $ddl$create function auth.email() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.email', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
  )::text
$$$ddl$;
  end if;
  if to_regprocedure('auth.jwt()') is null then
    execute $ddl$create function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$$ddl$;
  end if;
end
$outer$;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt()
  to anon, authenticated, service_role;

-- Realtime publication (Supabase creates it empty; tables join it in migrations).
do $$
begin
  if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$$;

-- The public schema as Supabase configures it: the API roles may use it; default privileges on
-- new objects come from each migration's explicit grants, so nothing is granted by default here.
grant usage on schema public to anon, authenticated, service_role;
