-- public.agent_deployments: owners read their live (not soft-deleted) rows; every write goes through
-- the functions (service_role / SECURITY DEFINER), never directly from a client; anon has no grant.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(26);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}'),
  ('c0000000-0000-4000-8000-00000000000c', 'pgtap-admin@example.test', '{"role": "admin"}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-published', 'pgTAP published', 'testing', 'chat', 'free', true);
insert into public.agent_deployments (id, user_id, agent_id, name, deleted_at) values
  ('d0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A live', null),
  ('d0000000-0000-4000-8000-0000000000a2', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A soft-deleted', now()),
  ('d0000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000001', 'B live', null);

-- user A -------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select name from public.agent_deployments order by name$$,
                  array['A live'], 'A sees exactly their own live deployment');
select is_empty($$select 1 from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000b1'$$,
                'A cannot read B''s deployment by id');
select is_empty($$select 1 from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000a2'$$,
                'A cannot read their own soft-deleted deployment');
select throws_ok($$insert into public.agent_deployments (agent_id, name)
                   values ('a9000000-0000-4000-8000-000000000001', 'A direct insert')$$,
                 '42501', 'permission denied for table agent_deployments',
                 'A cannot insert a deployment directly (no grant: writes go through functions)');
select throws_ok($$update public.agent_deployments set name = 'renamed' where id = 'd0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table agent_deployments', 'A cannot update their own deployment');
select throws_ok($$update public.agent_deployments set deleted_at = now() where id = 'd0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table agent_deployments', 'A cannot soft-delete their own deployment directly');
select throws_ok($$update public.agent_deployments set user_id = 'a0000000-0000-4000-8000-00000000000a'
                    where id = 'd0000000-0000-4000-8000-0000000000b1'$$,
                 '42501', 'permission denied for table agent_deployments', 'A cannot take over B''s deployment');
select throws_ok($$delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000a1'$$,
                 '42501', 'permission denied for table agent_deployments', 'A cannot delete their own deployment');
select throws_ok($$delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000b1'$$,
                 '42501', 'permission denied for table agent_deployments', 'A cannot delete B''s deployment');
reset role;

-- user B -------------------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "b0000000-0000-4000-8000-00000000000b", "role": "authenticated", "app_metadata": {}}';

select results_eq($$select name from public.agent_deployments order by name$$,
                  array['B live'], 'B sees exactly their own deployment, none of A''s');
select throws_ok($$insert into public.agent_deployments (user_id, agent_id, name)
                   values ('a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001', 'for A')$$,
                 '42501', 'permission denied for table agent_deployments', 'B cannot insert a deployment for A');
select throws_ok($$delete from public.agent_deployments$$,
                 '42501', 'permission denied for table agent_deployments', 'B cannot delete deployments');
reset role;

-- an admin reads deployments through analytics functions, not through the table ------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {"role": "admin"}}';
select is_empty($$select 1 from public.agent_deployments where name in ('A live', 'B live', 'A soft-deleted')$$,
                'an admin does not see other users'' deployments');
reset role;

-- authenticated without a sub claim sees nothing ---------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to '{"role": "authenticated"}';
select is_empty($$select 1 from public.agent_deployments$$, 'authenticated without sub sees no deployment');
reset role;

-- anon -----------------------------------------------------------------------------------------------------
set local role anon;
set local request.jwt.claims to '{"role": "anon"}';
select throws_ok($$select * from public.agent_deployments$$,
                 '42501', 'permission denied for table agent_deployments', 'anon cannot select deployments');
select throws_ok($$insert into public.agent_deployments (user_id, agent_id, name)
                   values ('a0000000-0000-4000-8000-00000000000a', 'a9000000-0000-4000-8000-000000000001', 'anon')$$,
                 '42501', 'permission denied for table agent_deployments', 'anon cannot insert deployments');
select throws_ok($$update public.agent_deployments set name = 'anon'$$,
                 '42501', 'permission denied for table agent_deployments', 'anon cannot update deployments');
select throws_ok($$delete from public.agent_deployments$$,
                 '42501', 'permission denied for table agent_deployments', 'anon cannot delete deployments');
reset role;

-- service_role: the functions' path ----------------------------------------------------------------------
set local role service_role;
set local request.jwt.claims to '{"role": "service_role"}';
select results_eq($$select name from public.agent_deployments where user_id in
                     ('a0000000-0000-4000-8000-00000000000a', 'b0000000-0000-4000-8000-00000000000b') order by name$$,
                  array['A live', 'A soft-deleted', 'B live'], 'service_role sees every deployment, soft-deleted included');
select lives_ok($$insert into public.agent_deployments (id, user_id, agent_id, name, config, status) values
                  ('d0000000-0000-4000-8000-0000000000a3', 'a0000000-0000-4000-8000-00000000000a',
                   'a9000000-0000-4000-8000-000000000001', 'A via service', '{"tone": "dry"}', 'active')$$,
                'service_role inserts a deployment for A');
select lives_ok($$update public.agent_deployments set status = 'paused', status_reason = 'pgtap'
                   where id = 'd0000000-0000-4000-8000-0000000000a3'$$,
                'service_role updates a deployment');
select lives_ok($$delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000a2'$$,
                'service_role hard-deletes a deployment');
reset role;

-- A now sees the deployment the service created for them ----------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';
select results_eq($$select name, status, config from public.agent_deployments order by name$$,
                  $$values ('A live'::text, 'configuring'::text, '{}'::jsonb),
                           ('A via service', 'paused', '{"tone": "dry"}')$$,
                  'A sees the deployment the service created for them');
reset role;

-- read back as postgres: the clients changed nothing --------------------------------------------------------
select results_eq($$select id, name, deleted_at is null from public.agent_deployments
                     where id in ('d0000000-0000-4000-8000-0000000000a1', 'd0000000-0000-4000-8000-0000000000b1')
                     order by id$$,
                  $$values ('d0000000-0000-4000-8000-0000000000a1'::uuid, 'A live'::text, true),
                           ('d0000000-0000-4000-8000-0000000000b1', 'B live', true)$$,
                  'A''s and B''s deployments are unchanged after the denied writes');
select is((select user_id from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000b1'),
          'b0000000-0000-4000-8000-00000000000b'::uuid, 'B still owns B''s deployment');
select is((select count(*)::int from public.agent_deployments where name in ('A direct insert', 'for A', 'anon')),
          0, 'no deployment was inserted by a client');

select * from finish();
rollback;
