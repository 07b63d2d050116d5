-- Triggers: marketplace_agents.deploy_count follows live deployments (insert, soft delete, restore,
-- hard delete, cascade), never goes negative, and a deployment cannot change its agent;
-- updated_at is refreshed on every update of every table that has it.
-- now() is the transaction's start time, so "refreshed" means: a row inserted with an old
-- updated_at reads updated_at = now() after an update. Conventions: see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(26);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published, updated_at) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap-counted', 'pgTAP counted', 'testing', 'chat', 'free', true, '2000-01-01'),
  ('a9000000-0000-4000-8000-000000000002', 'pgtap-other', 'pgTAP other', 'testing', 'chat', 'free', true, '2000-01-01');

-- deploy_count -----------------------------------------------------------------------------------------
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 0,
          'a new agent has deploy_count 0');

insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A one');
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 1,
          'inserting a deployment increments deploy_count');

-- the functions insert as service_role: the SECURITY DEFINER trigger still updates the catalog
set local role service_role;
insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000a2', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A two'),
  ('d0000000-0000-4000-8000-0000000000b1', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000001', 'B one');
reset role;
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 3,
          'inserts by service_role increment deploy_count (one per row)');

insert into public.agent_deployments (id, user_id, agent_id, name, deleted_at) values
  ('d0000000-0000-4000-8000-0000000000a9', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A born deleted', now());
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 3,
          'inserting an already soft-deleted deployment does not count');

update public.agent_deployments set deleted_at = now() where id = 'd0000000-0000-4000-8000-0000000000a1';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 2,
          'soft delete (deleted_at set) decrements deploy_count');

update public.agent_deployments set deleted_at = now() - interval '1 minute' where id = 'd0000000-0000-4000-8000-0000000000a1';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 2,
          'changing deleted_at of an already deleted deployment does not decrement again');

update public.agent_deployments set name = 'A two renamed', status = 'active' where id = 'd0000000-0000-4000-8000-0000000000a2';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 2,
          'other updates leave deploy_count alone');

update public.agent_deployments set deleted_at = null where id = 'd0000000-0000-4000-8000-0000000000a1';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 3,
          'restoring a soft-deleted deployment increments deploy_count');

delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000a2';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 2,
          'hard delete of a live deployment decrements deploy_count');

delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000a9';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 2,
          'hard delete of a soft-deleted deployment does not decrement');

set local role service_role;
update public.agent_deployments set deleted_at = now() where id = 'd0000000-0000-4000-8000-0000000000b1';
reset role;
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 1,
          'soft delete by service_role decrements deploy_count');

-- deleting a user cascades to their deployments, and the count follows
delete from auth.users where id = 'a0000000-0000-4000-8000-00000000000a';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-counted'), 0,
          'deleting a user (cascade) decrements for their live deployments');

-- never negative: a drifted counter at 0 stays 0 when a live deployment goes away
insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000b2', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000002', 'B on other');
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-other'), 1,
          'each agent counts its own deployments');
update public.marketplace_agents set deploy_count = 0 where slug = 'pgtap-other';
select lives_ok($$delete from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000b2'$$,
                'hard delete with deploy_count already 0 does not violate the nonnegative check');
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-other'), 0,
          'deploy_count does not go negative on hard delete');
insert into public.agent_deployments (id, user_id, agent_id, name) values
  ('d0000000-0000-4000-8000-0000000000b3', 'b0000000-0000-4000-8000-00000000000b',
   'a9000000-0000-4000-8000-000000000002', 'B on other again');
update public.marketplace_agents set deploy_count = 0 where slug = 'pgtap-other';
update public.agent_deployments set deleted_at = now() where id = 'd0000000-0000-4000-8000-0000000000b3';
select is((select deploy_count from public.marketplace_agents where slug = 'pgtap-other'), 0,
          'deploy_count does not go negative on soft delete');

select throws_ok($$update public.agent_deployments set agent_id = 'a9000000-0000-4000-8000-000000000001'
                    where id = 'd0000000-0000-4000-8000-0000000000b3'$$,
                 '23514', 'a deployment cannot change its agent', 'a deployment cannot move to another agent');

-- updated_at ---------------------------------------------------------------------------------------------
insert into auth.users (id, email) values ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test');
insert into public.agent_deployments (id, user_id, agent_id, name, updated_at) values
  ('d0000000-0000-4000-8000-0000000000c1', 'a0000000-0000-4000-8000-00000000000a',
   'a9000000-0000-4000-8000-000000000001', 'A dated', '2000-01-01');
insert into private.agent_prompts (agent_id, system_prompt, updated_at) values
  ('a9000000-0000-4000-8000-000000000001', 'pgtap prompt', '2000-01-01');
insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint, updated_at) values
  ('d0000000-0000-4000-8000-0000000000c1', 'api_key', 'k1', '\x00', 'sk-…', '2000-01-01');
insert into public.agent_conversations (id, deployment_id, user_id, updated_at) values
  ('c0000000-0000-4000-8000-0000000000c1', 'd0000000-0000-4000-8000-0000000000c1',
   'a0000000-0000-4000-8000-00000000000a', '2000-01-01');
insert into public.agent_messages (id, conversation_id, user_id, role, content, status, reply_to, completed_at) values
  ('e0000000-0000-4000-8000-0000000000c1', 'c0000000-0000-4000-8000-0000000000c1',
   'a0000000-0000-4000-8000-00000000000a', 'user', 'q', 'completed', null, null),
  ('e0000000-0000-4000-8000-0000000000c2', 'c0000000-0000-4000-8000-0000000000c1',
   'a0000000-0000-4000-8000-00000000000a', 'assistant', 'a', 'completed', 'e0000000-0000-4000-8000-0000000000c1', now());
insert into public.message_feedback (id, message_id, user_id, rating, updated_at) values
  ('f0000000-0000-4000-8000-0000000000c1', 'e0000000-0000-4000-8000-0000000000c2',
   'a0000000-0000-4000-8000-00000000000a', 'like', '2000-01-01');

select is((select updated_at from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000c1'),
          '2000-01-01'::timestamptz, 'insert keeps the given updated_at (the trigger is BEFORE UPDATE only)');

update public.marketplace_agents set tagline = 'touched' where slug = 'pgtap-other';
select is((select updated_at from public.marketplace_agents where slug = 'pgtap-other'), now(),
          'marketplace_agents.updated_at is refreshed on update');
update private.agent_prompts set system_prompt = 'pgtap prompt v2' where agent_id = 'a9000000-0000-4000-8000-000000000001';
select is((select updated_at from private.agent_prompts where agent_id = 'a9000000-0000-4000-8000-000000000001'), now(),
          'agent_prompts.updated_at is refreshed on update');
update public.agent_deployments set status = 'active' where id = 'd0000000-0000-4000-8000-0000000000c1';
select is((select updated_at from public.agent_deployments where id = 'd0000000-0000-4000-8000-0000000000c1'), now(),
          'agent_deployments.updated_at is refreshed on update');
update private.deployment_secrets set hint = 'sk-…2' where deployment_id = 'd0000000-0000-4000-8000-0000000000c1';
select is((select updated_at from private.deployment_secrets where deployment_id = 'd0000000-0000-4000-8000-0000000000c1'),
          now(), 'deployment_secrets.updated_at is refreshed on update');
update public.agent_conversations set title = 'titled' where id = 'c0000000-0000-4000-8000-0000000000c1';
select is((select updated_at from public.agent_conversations where id = 'c0000000-0000-4000-8000-0000000000c1'), now(),
          'agent_conversations.updated_at is refreshed on update');

-- the owner's own update through the API refreshes it too, and cannot pin it (no column grant)
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated", "app_metadata": {}}';
select lives_ok($$update public.message_feedback set rating = 'dislike' where id = 'f0000000-0000-4000-8000-0000000000c1'$$,
                'A updates their feedback through the API');
reset role;
select is((select updated_at from public.message_feedback where id = 'f0000000-0000-4000-8000-0000000000c1'), now(),
          'message_feedback.updated_at is refreshed by the owner''s update');

update public.marketplace_agents set updated_at = '1999-01-01' where slug = 'pgtap-counted';
select is((select updated_at from public.marketplace_agents where slug = 'pgtap-counted'), now(),
          'an explicit updated_at in an UPDATE is overridden by the trigger');

select * from finish();
rollback;
