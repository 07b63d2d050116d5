-- The processes' own database logins, in PostgREST's shape (DESIGN §5): neither is a superuser,
-- and neither holds CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS itself.
--
--   agentmarket_api     the HTTP functions (API_DATABASE_URL). NOINHERIT and a member of exactly
--                       anon and authenticated, like Supabase's `authenticator` minus service_role:
--                       each request transaction becomes one of the two (set_config('role', …,
--                       true)) and a RESET ROLE or SET ROLE can only land on anon, authenticated or
--                       the login itself, whose own privileges are nil except EXECUTE on
--                       private.applied_migrations() (/readyz) and, in a later migration,
--                       private.api_signing_key().
--   agentmarket_worker  the chat worker (WORKER_DATABASE_URL). NOINHERIT, a member of
--                       service_role, and switched to it at login (`alter role … set role`): it
--                       works as service_role (whose BYPASSRLS applies to the current role; it is
--                       not inherited) and holds nothing itself.
--
-- Roles belong to the cluster, not the database, and several databases of one cluster may be
-- migrated (the test suite, staging next to production): everything here only adds what is
-- missing and tolerates a concurrent run. The roles are created NOLOGIN; the operator gives them a
-- password (docs/operations.md: `alter role agentmarket_api login password '…'`). On a plain
-- local PostgreSQL in dev/test `agentmarket migrate` does that with the local passwords.

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'agentmarket_api') then
    begin
      create role agentmarket_api nologin noinherit;
    exception when duplicate_object or unique_violation then
      null;  -- another database of this cluster created it meanwhile
    end;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'agentmarket_worker') then
    begin
      create role agentmarket_worker nologin noinherit;
    exception when duplicate_object or unique_violation then
      null;
    end;
  end if;
end
$$;

do $$
begin
  if not pg_catalog.pg_has_role('agentmarket_api', 'anon', 'member') then
    grant anon to agentmarket_api;
  end if;
  if not pg_catalog.pg_has_role('agentmarket_api', 'authenticated', 'member') then
    grant authenticated to agentmarket_api;
  end if;
  if not pg_catalog.pg_has_role('agentmarket_worker', 'service_role', 'member') then
    grant service_role to agentmarket_worker;
  end if;
  if not exists (
    select 1 from pg_catalog.pg_db_role_setting
     where setrole = 'agentmarket_worker'::regrole and setdatabase = 0
       and setconfig @> array['role=service_role']
  ) then
    alter role agentmarket_worker set role = service_role;
  end if;
end
$$;

-- /readyz: which migrations the database has. Versions only (not the statements), through a
-- definer function the API login alone may call (it has no privilege on the history table). What
-- an injection in the API could learn from it: the list of applied versions, nothing else.
create or replace function private.applied_migrations()
returns setof text
language sql
stable
security definer
set search_path = ''
as $$
  select version from supabase_migrations.schema_migrations order by version
$$;

revoke all on function private.applied_migrations() from public, anon, authenticated;
grant usage on schema private to agentmarket_api;
grant execute on function private.applied_migrations() to agentmarket_api, service_role;
