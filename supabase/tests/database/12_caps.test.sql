-- The caps checked inside the API functions (20261130130000_caps.sql), called as `authenticated`:
-- conversations per minute (create_conversation, AMRLM "conversations"; a chat send that starts a
-- conversation is not counted), deploys per minute (every create_deployment and update_deployment,
-- AMRLM "deploy"), deployments in total with paused ones counted and deleted ones not
-- (create_deployment, AMDPT "deployments"), the active cap still AMLIM. Each refusal stores
-- nothing and carries the JSON DETAIL the API turns into headers. Grants and SECURITY DEFINER of
-- the recreated functions: 01_structure.test.sql.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(29);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('c0000000-0000-4000-8000-00000000000c', 'pgtap-caps-c@example.test', '{}'),
  ('d0000000-0000-4000-8000-00000000000d', 'pgtap-caps-d@example.test', '{}'),
  ('e0000000-0000-4000-8000-00000000000e', 'pgtap-caps-e@example.test', '{}');
insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model, is_published) values
  ('a9000000-0000-4000-8000-0000000000c1', 'pgtap-caps', 'pgTAP caps', 'testing', 'chat', 'free', true);
insert into public.agent_deployments (id, user_id, agent_id, name, config, status) values
  ('dc000000-0000-4000-8000-0000000000c1', 'c0000000-0000-4000-8000-00000000000c',
   'a9000000-0000-4000-8000-0000000000c1', 'C chat', '{}', 'active');
update private.app_settings
   set conversations_per_minute = 2, deploy_per_minute = 3, max_deployments_per_user = 100,
       max_active_deployments = 100, chat_per_minute = 100;

create function pg_temp.sign(p_user uuid) returns bytea language sql as $$
  select extensions.hmac(convert_to(private.signed_deployment_payload(
           'create', p_user, 'a9000000-0000-4000-8000-0000000000c1', '{}', '{}'), 'UTF8'),
         private.api_signing_key(), 'sha256')
$$;
create temp table sigs (name text primary key, sig bytea not null);
grant select on sigs to public;
insert into sigs values ('d', pg_temp.sign('d0000000-0000-4000-8000-00000000000d')),
                        ('e', pg_temp.sign('e0000000-0000-4000-8000-00000000000e'));

-- The DETAIL of the error `p_sql` raises, as JSON (null if it raises none).
create function pg_temp.detail_of(p_sql text) returns jsonb language plpgsql as $$
declare
  detail text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics detail = pg_exception_detail;
  return detail::jsonb;
end
$$;

-- Conversations per minute (C) ----------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {}}';

select lives_ok($$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'one')$$,
                'the first conversation of the minute is created');
select lives_ok($$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'two')$$,
                'the second too (the limit is 2)');
select throws_ok($$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'three')$$,
                 'AMRLM', 'rate limited', 'the third in the minute is refused');
select is((select d - 'retry_after' from pg_temp.detail_of(
             $q$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'three')$q$) d),
          '{"policy": "conversations", "limit": 2, "window": 60}'::jsonb,
          'the refusal names the policy, its quota and its window');
select ok((select (d ->> 'retry_after')::int between 1 and 30 from pg_temp.detail_of(
             $q$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'three')$q$) d),
          'and when one more would fit (one every 30 s)');
select throws_ok($$select private.create_conversation('dc000000-0000-4000-8000-0000000000ff', 'nope')$$,
                 'AMNF2', 'deployment not found', 'an unknown deployment is still a 404, not a rate refusal');
select lives_ok($$select * from private.send_chat_message('dc000000-0000-4000-8000-0000000000c1', null, 'hi', null, null)$$,
                'a chat send that starts a conversation is not under the conversation rate');
reset role;

select is((select count(*)::int from public.agent_conversations
            where user_id = 'c0000000-0000-4000-8000-00000000000c' and title in ('one', 'two', 'three')),
          2, 'the refused conversation was not stored');
update private.rate_limits set tat = tat - interval '30 seconds'
 where key = 'conversations:c0000000-0000-4000-8000-00000000000c';

set local role authenticated;
set local request.jwt.claims to
  '{"sub": "c0000000-0000-4000-8000-00000000000c", "role": "authenticated", "app_metadata": {}}';
select lives_ok($$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'later')$$,
                'thirty seconds later one more fits');
select throws_ok($$select private.create_conversation('dc000000-0000-4000-8000-0000000000c1', 'later again')$$,
                 'AMRLM', 'rate limited', 'and only one');
reset role;

-- Deploys per minute: creates and updates (D) -------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "d0000000-0000-4000-8000-00000000000d", "role": "authenticated", "app_metadata": {}}';

select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'D one', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'd'))$$, 'a first deploy');
select lives_ok($$select * from private.update_deployment(
                    (select id from public.agent_deployments where name = 'D one'), 'D renamed', null, null, null, null)$$,
                'a rename (an update counts against the same rate)');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'D two', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'd'))$$, 'a second deploy: three in the minute');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'D three', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'd'))$$,
                 'AMRLM', 'rate limited', 'a fourth deploy in the minute is refused');
select throws_ok($$select * from private.update_deployment(
                     (select id from public.agent_deployments where name = 'D renamed'), 'D again', null, null, null, 'paused')$$,
                 'AMRLM', 'rate limited', 'so is an update');
select is((select d - 'retry_after' from pg_temp.detail_of(
             $q$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'D three', '{}', '{}',
                  (select sig from pg_temp.sigs where name = 'd'))$q$) d),
          '{"policy": "deploy", "limit": 3, "window": 60}'::jsonb, 'the refusal names the deploy policy');
reset role;

select is((select array_agg(name || ':' || status order by name) from public.agent_deployments
            where user_id = 'd0000000-0000-4000-8000-00000000000d'),
          array['D renamed:active', 'D two:active'], 'the refused deploy and update changed nothing');

-- Deployments in total: paused ones count, deleted ones do not (E) ----------------------------------
update private.app_settings set deploy_per_minute = 1000, max_deployments_per_user = 2;
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "e0000000-0000-4000-8000-00000000000e", "role": "authenticated", "app_metadata": {}}';

select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E one', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'e'))$$, 'E deploys one');
select lives_ok($$select * from private.update_deployment(
                    (select id from public.agent_deployments where name = 'E one'), null, null, null, null, 'paused')$$,
                'and pauses it');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E two', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'e'))$$, 'E deploys a second');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E three', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'e'))$$,
                 'AMDPT', 'too many deployments', 'a third is refused: the paused one counts');
select is(pg_temp.detail_of($q$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E three',
                                 '{}', '{}', (select sig from pg_temp.sigs where name = 'e'))$q$),
          '{"policy": "deployments", "limit": 2, "window": 0, "retry_after": 1}'::jsonb,
          'the refusal names the total cap');
select ok(private.delete_deployment((select id from public.agent_deployments where name = 'E two')),
          'E deletes the second');
select lives_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E three', '{}', '{}',
                    (select sig from pg_temp.sigs where name = 'e'))$$, 'a deleted one does not count');
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E four', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'e'))$$,
                 'AMDPT', 'too many deployments', 'at the cap again');
reset role;

select is((select count(*)::int from public.agent_deployments
            where user_id = 'e0000000-0000-4000-8000-00000000000e' and name in ('E three', 'E four')),
          1, 'the refused deploys were not stored');

-- The cap on active deployments is still its own (E: one active, one paused) -----------------------
update private.app_settings set max_deployments_per_user = 100, max_active_deployments = 1;
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "e0000000-0000-4000-8000-00000000000e", "role": "authenticated", "app_metadata": {}}';
select throws_ok($$select * from private.create_deployment('a9000000-0000-4000-8000-0000000000c1', 'E four', '{}', '{}',
                     (select sig from pg_temp.sigs where name = 'e'))$$,
                 'AMLIM', 'deployment limit reached', 'under the total cap, the active cap still refuses');
select throws_ok($$select * from private.update_deployment(
                     (select id from public.agent_deployments where name = 'E one'), null, null, null, null, 'active')$$,
                 'AMSIG', 'activating needs a validated configuration', 'update checks are unchanged');
reset role;

select is((select count(*)::int from private.rate_limits where key = 'deploy:e0000000-0000-4000-8000-00000000000e'),
          1, 'the deploy rate is kept per user');

select * from finish();
rollback;
