-- public.marketplace_agents: anyone reads published rows; admins (app_metadata.role = admin, never
-- user_metadata) also read unpublished ones; nobody but the service writes.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(28);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data, raw_user_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}', '{"role": "admin"}'),
  ('c0000000-0000-4000-8000-00000000000c', 'pgtap-admin@example.test', '{"role": "admin"}', '{}');

insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-published', 'pgTAP published', 'testing', 'chat', 'free', true),
  ('a9000000-0000-4000-8000-000000000002', 'pgtap-unpublished', 'pgTAP unpublished', 'testing', 'chat', 'free', false);

-- anon -----------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';

select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published'], 'anon sees the published fixture, not the unpublished one');
select is_empty($$select 1 from public.marketplace_agents where not is_published$$,
                'anon sees no unpublished agent at all');
select throws_ok($$insert into public.marketplace_agents (slug, name, category, kind, pricing_model)
                   values ('pgtap-anon', 'x', 'testing', 'chat', 'free')$$,
                 '42501', 'permission denied for table marketplace_agents', 'anon cannot insert agents');
select throws_ok($$update public.marketplace_agents set name = 'hacked' where slug = 'pgtap-published'$$,
                 '42501', 'permission denied for table marketplace_agents', 'anon cannot update agents');
select throws_ok($$delete from public.marketplace_agents where slug = 'pgtap-published'$$,
                 '42501', 'permission denied for table marketplace_agents', 'anon cannot delete agents');
reset role;

-- authenticated user A (no admin claim) -------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published'], 'authenticated user sees the published fixture only');
select is_empty($$select 1 from public.marketplace_agents where not is_published$$,
                'authenticated user sees no unpublished agent at all');
select is_empty($$select 1 from public.marketplace_agents where id = 'a9000000-0000-4000-8000-000000000002'$$,
                'authenticated user cannot fetch the unpublished agent by id');
select throws_ok($$insert into public.marketplace_agents (slug, name, category, kind, pricing_model)
                   values ('pgtap-user', 'x', 'testing', 'chat', 'free')$$,
                 '42501', 'permission denied for table marketplace_agents', 'authenticated cannot insert agents');
select throws_ok($$update public.marketplace_agents set is_published = true where slug = 'pgtap-unpublished'$$,
                 '42501', 'permission denied for table marketplace_agents', 'authenticated cannot update agents');
select throws_ok($$update public.marketplace_agents set deploy_count = 1000000 where slug = 'pgtap-published'$$,
                 '42501', 'permission denied for table marketplace_agents',
                 'authenticated cannot inflate deploy_count');
select throws_ok($$delete from public.marketplace_agents where slug = 'pgtap-published'$$,
                 '42501', 'permission denied for table marketplace_agents', 'authenticated cannot delete agents');
reset role;

-- user B claims admin in user_metadata (user-editable): still not an admin ---------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {},
    "user_metadata": {"role": "admin"}}';

select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published'], 'user_metadata.role = admin does not reveal unpublished agents');
select is_empty($$select 1 from public.marketplace_agents where not is_published$$,
                'user_metadata.role = admin sees no unpublished agent at all');
reset role;

-- a top-level "role": "admin" claim is not app_metadata either -----------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "admin", "app_metadata": {"role": "user"}}';

select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published'], 'a top-level role claim of admin does not reveal unpublished agents');
reset role;

-- admin C (app_metadata.role = admin) ----------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';

select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published', 'pgtap-unpublished'], 'an admin sees published and unpublished agents');
select throws_ok($$insert into public.marketplace_agents (slug, name, category, kind, pricing_model)
                   values ('pgtap-admin', 'x', 'testing', 'chat', 'free')$$,
                 '42501', 'permission denied for table marketplace_agents',
                 'an admin cannot insert agents through the API either');
select throws_ok($$update public.marketplace_agents set is_published = true where slug = 'pgtap-unpublished'$$,
                 '42501', 'permission denied for table marketplace_agents', 'an admin cannot update agents');
select throws_ok($$delete from public.marketplace_agents where slug = 'pgtap-unpublished'$$,
                 '42501', 'permission denied for table marketplace_agents', 'an admin cannot delete agents');
reset role;

-- admin claim without a sub (e.g. a service-issued admin token) still works: the policy reads the JWT only
set local role authenticated;
set local request.jwt.claims to '{"role": "authenticated", "app_metadata": {"role": "admin"}}';
select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published', 'pgtap-unpublished'], 'the admin policy depends on app_metadata only');
reset role;

-- no claims at all under authenticated (misconfigured request): published only ------------------------
set local role authenticated;
set local request.jwt.claims to '';
select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published'], 'authenticated without claims sees published agents only');
reset role;

-- service_role: bypasses RLS and writes the catalog --------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select results_eq($$select slug from public.marketplace_agents where slug like 'pgtap-%' order by slug$$,
                  array['pgtap-published', 'pgtap-unpublished'], 'service_role sees every agent');
select lives_ok($$insert into public.marketplace_agents (slug, name, category, kind, pricing_model, is_published)
                  values ('pgtap-service', 'pgTAP service', 'testing', 'content', 'free', true)$$,
                'service_role inserts an agent');
select lives_ok($$update public.marketplace_agents set tagline = 'updated by service' where slug = 'pgtap-unpublished'$$,
                'service_role updates an agent');
select lives_ok($$delete from public.marketplace_agents where slug = 'pgtap-service'$$,
                'service_role deletes an agent');
reset role;

-- read back as postgres: nothing the API roles tried changed anything -------------------------------
select results_eq($$select slug, name, is_published, deploy_count, tagline from public.marketplace_agents
                     where slug like 'pgtap-%' order by slug$$,
                  $$values ('pgtap-published'::text, 'pgTAP published'::text, true, 0, ''::text),
                           ('pgtap-unpublished', 'pgTAP unpublished', false, 0, 'updated by service')$$,
                  'fixtures changed only by service_role');
select is((select count(*)::int from public.marketplace_agents where slug in ('pgtap-anon', 'pgtap-user', 'pgtap-admin')),
          0, 'no agent was inserted by anon, authenticated or admin');

-- published agents are readable column by column, including the generated search document
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select results_eq($$select name from public.marketplace_agents
                     where search @@ websearch_to_tsquery('english', 'pgTAP') and slug like 'pgtap-%'$$,
                  array['pgTAP published'], 'anon full-text search finds the published fixture only');
reset role;

select * from finish();
rollback;
