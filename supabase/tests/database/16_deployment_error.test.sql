-- The deployment `error` state and an event for every failed reply
-- (20261130162000_deployment_error_state.sql): finish_chat_job's p_deployment_error moves an
-- active deployment to `error` in the finishing transaction (only the worker may call it), if
-- p_deployment_key, the sealed key the refused call used, is still the deployment's key
-- (20261201060000_deployment_error_names_its_key.sql);
-- send_chat_message then refuses it with AMERR naming the reason (a repeated client_message_id
-- is still answered); pausing makes it `paused`; a reply failed as `worker_lost` by a claim
-- writes `agent.chat.error` in the same transaction.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(29);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('e1000000-0000-4000-8000-00000000000e', 'pgtap-error-e@example.test', '{}');
insert into public.marketplace_agents
  (id, slug, name, category, kind, pricing_model, is_published, rate_limit_per_minute) values
  ('a9000000-0000-4000-8000-0000000000e1', 'pgtap-error', 'pgTAP error', 'testing', 'chat', 'free', true, 1000);
insert into public.agent_deployments (id, user_id, agent_id, name, config, status) values
  ('de000000-0000-4000-8000-0000000000e1', 'e1000000-0000-4000-8000-00000000000e',
   'a9000000-0000-4000-8000-0000000000e1', 'E keyed', '{}', 'active'),
  ('de000000-0000-4000-8000-0000000000e2', 'e1000000-0000-4000-8000-00000000000e',
   'a9000000-0000-4000-8000-0000000000e1', 'E paused later', '{}', 'active'),
  ('de000000-0000-4000-8000-0000000000e3', 'e1000000-0000-4000-8000-00000000000e',
   'a9000000-0000-4000-8000-0000000000e1', 'E lost', '{}', 'active'),
  ('de000000-0000-4000-8000-0000000000e4', 'e1000000-0000-4000-8000-00000000000e',
   'a9000000-0000-4000-8000-0000000000e1', 'E rekeyed', '{}', 'active'),
  ('de000000-0000-4000-8000-0000000000e5', 'e1000000-0000-4000-8000-00000000000e',
   'a9000000-0000-4000-8000-0000000000e1', 'E unnamed', '{}', 'active');
-- Each deployment's own (sealed) key; e2 answers with the platform key.
insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint) values
  ('de000000-0000-4000-8000-0000000000e1', 'openai_api_key', 'k1', '\x01e1', '…e1'),
  ('de000000-0000-4000-8000-0000000000e3', 'openai_api_key', 'k1', '\x01e3', '…e3'),
  ('de000000-0000-4000-8000-0000000000e4', 'openai_api_key', 'k1', '\x01e4', '…e4'),
  ('de000000-0000-4000-8000-0000000000e5', 'openai_api_key', 'k1', '\x01e5', '…e5');
update private.app_settings
   set chat_per_minute = 100, max_in_flight_per_user = 100, platform_tokens_per_day = 0;

select function_privs_are('private', 'finish_chat_job',
                          array['bigint', 'text', 'text', 'text', 'text', 'text', 'text', 'integer', 'integer', 'integer', 'integer', 'boolean', 'text', 'bytea'],
                          'authenticated', array[]::text[], 'authenticated cannot finish jobs');
select function_privs_are('private', 'finish_chat_job',
                          array['bigint', 'text', 'text', 'text', 'text', 'text', 'text', 'integer', 'integer', 'integer', 'integer', 'boolean', 'text', 'bytea'],
                          'service_role', array['EXECUTE'], 'the worker (service_role) may finish jobs');

-- One message to each deployment ------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "e1000000-0000-4000-8000-00000000000e", "role": "authenticated", "app_metadata": {}}';
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e1', null, 'key one', 'err-1', 't1')), 2, 'sent: ' || 'key one');
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e2', null, 'key two', 'err-2', 't2')), 2, 'sent: ' || 'key two');
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e3', null, 'key three', 'err-3', 't3')), 2, 'sent: ' || 'key three');
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e4', null, 'key four', 'err-5', 't5')), 2, 'sent: ' || 'key four');
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e5', null, 'key five', 'err-6', 't6')), 2, 'sent: ' || 'key five');
reset role;

set local role service_role;
create temp table claimed on commit drop as
  select c.*, d.id as deployment_id
    from private.claim_chat_jobs_counted('pgtap-w', 10, 30) c
    join public.agent_messages m on m.id = c.message_id
    join public.agent_conversations v on v.id = m.conversation_id
    join public.agent_deployments d on d.id = v.deployment_id;
reset role;

select is((select count(*)::int from claimed), 5, 'the five replies are claimed');

-- A completed reply never touches the deployment, whatever it is passed.
set local role service_role;
select ok(private.finish_chat_job(
            (select id from claimed where deployment_id = 'de000000-0000-4000-8000-0000000000e2'),
            'pgtap-w', 'completed', 'fine', null, null, 'm', 1, 1, 1, 1, false,
            'invalid_api_key: not for a completed reply', '\x01e2'),
          'a completed reply finishes');
reset role;
select is((select status from public.agent_deployments where id = 'de000000-0000-4000-8000-0000000000e2'),
          'active', 'a completed reply leaves the deployment active');

-- A reply failed on the deployment's refused key: the deployment goes to error, same transaction.
set local role service_role;
select ok(private.finish_chat_job(
            (select id from claimed where deployment_id = 'de000000-0000-4000-8000-0000000000e1'),
            'pgtap-w', 'failed', null, 'invalid_api_key', 'The API key was rejected.', null,
            null, null, null, 5, false, 'invalid_api_key: The API key was rejected.', '\x01e1'),
          'the failed reply finishes');
reset role;
select results_eq($$select status, status_reason from public.agent_deployments
                     where id = 'de000000-0000-4000-8000-0000000000e1'$$,
                  $$values ('error'::text, 'invalid_api_key: The API key was rejected.'::text)$$,
                  'the deployment is in error, with the reason');

-- Sends to it are refused, naming the reason; a repeat of an earlier send is still answered.
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "e1000000-0000-4000-8000-00000000000e", "role": "authenticated", "app_metadata": {}}';
select throws_ok($$select * from private.send_chat_message('de000000-0000-4000-8000-0000000000e1', null, 'again', null, null)$$,
                 'AMERR', 'deployment error: invalid_api_key: The API key was rejected.',
                 'a send to a deployment in error is refused with AMERR');
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e1', null, 'key one', 'err-1', 't1')),
          2, 'a repeated client_message_id is answered with the original exchange');
-- Renaming keeps the error; pausing leaves it for paused.
select is((private.update_deployment('de000000-0000-4000-8000-0000000000e1', 'renamed', null, null, null, null)).status,
          'error', 'renaming keeps the error');
select throws_ok($$select private.update_deployment('de000000-0000-4000-8000-0000000000e1', null, null, null, null, 'active')$$,
                 'AMSIG', null, 'resuming from error needs a freshly validated configuration');
select results_eq($$select (d).status, (d).status_reason
                      from (select private.update_deployment('de000000-0000-4000-8000-0000000000e1', null, null, null, null, 'paused') d) u$$,
                  $$values ('paused'::text, null::text)$$,
                  'pausing a deployment in error pauses it');
reset role;

-- Not an active deployment any more (paused meanwhile): a refused key leaves it as the owner set it.
update public.agent_deployments set status = 'paused' where id = 'de000000-0000-4000-8000-0000000000e3';
set local role service_role;
select ok(private.finish_chat_job(
            (select id from claimed where deployment_id = 'de000000-0000-4000-8000-0000000000e3'),
            'pgtap-w', 'failed', null, 'invalid_api_key', 'rejected', null,
            null, null, null, 5, false, 'invalid_api_key: rejected', '\x01e3'),
          'a failed reply of a paused deployment finishes');
reset role;
select is((select status from public.agent_deployments where id = 'de000000-0000-4000-8000-0000000000e3'),
          'paused', 'a paused deployment stays paused');

-- Its owner saved a new key during the call: the old key's refusal leaves the deployment active.
update private.deployment_secrets set ciphertext = '\x02e4', updated_at = now()
 where deployment_id = 'de000000-0000-4000-8000-0000000000e4';
set local role service_role;
select ok(private.finish_chat_job(
            (select id from claimed where deployment_id = 'de000000-0000-4000-8000-0000000000e4'),
            'pgtap-w', 'failed', null, 'invalid_api_key', 'rejected', null,
            null, null, null, 5, false, 'invalid_api_key: rejected', '\x01e4'),
          'a reply failed on a key replaced since finishes');
reset role;
select results_eq($$select status, status_reason from public.agent_deployments
                     where id = 'de000000-0000-4000-8000-0000000000e4'$$,
                  $$values ('active'::text, null::text)$$,
                  'a refused key that is no longer the deployment''s leaves it active');

-- A refusal that names no key (the platform's) never moves the deployment.
set local role service_role;
select ok(private.finish_chat_job(
            (select id from claimed where deployment_id = 'de000000-0000-4000-8000-0000000000e5'),
            'pgtap-w', 'failed', null, 'invalid_api_key', 'rejected', null,
            null, null, null, 5, false, 'invalid_api_key: rejected'),
          'a reply failed naming no key finishes');
reset role;
select is((select status from public.agent_deployments where id = 'de000000-0000-4000-8000-0000000000e5'),
          'active', 'a refusal naming no key leaves the deployment active');

-- worker_lost: a lease that expired with no attempts left fails the reply at the next claim, with
-- its agent.chat.error event in the same transaction.
update public.agent_deployments set status = 'active' where id = 'de000000-0000-4000-8000-0000000000e3';
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "e1000000-0000-4000-8000-00000000000e", "role": "authenticated", "app_metadata": {}}';
select is((select count(*)::int from private.send_chat_message('de000000-0000-4000-8000-0000000000e3', null, 'will be lost', 'err-4', 't4')), 2, 'sent: ' || 'will be lost');
reset role;
set local role service_role;
select is((select count(*)::int from private.claim_chat_jobs_counted('pgtap-w', 10, 30)), 1, 'the new reply is claimed');
reset role;
update private.chat_jobs j
   set max_attempts = 1, locked_until = now() - interval '1 second'
  from public.agent_messages m
 where m.id = j.message_id and j.status = 'running'
   and m.reply_to = (select id from public.agent_messages where client_message_id = 'err-4');
set local role service_role;
select is((select count(*)::int from private.claim_chat_jobs_counted('pgtap-w2', 10, 30)), 0,
          'the next claim fails the expired job instead of claiming it');
reset role;
select results_eq($$select m.status, m.error_code from public.agent_messages m
                     where m.reply_to = (select id from public.agent_messages where client_message_id = 'err-4')$$,
                  $$values ('failed'::text, 'worker_lost'::text)$$,
                  'the reply is failed as worker_lost');
select results_eq($$select e.user_id, e.deployment_id, e.agent_id, e.properties ->> 'error_type',
                           e.properties ->> 'error_message' is not null, (e.properties ->> 'attempt')::int
                      from private.telemetry_events e
                     where e.name = 'agent.chat.error'
                       and e.properties ->> 'message_id' = (select m.id::text from public.agent_messages m
                             where m.reply_to = (select id from public.agent_messages where client_message_id = 'err-4'))$$,
                  $$values ('e1000000-0000-4000-8000-00000000000e'::uuid, 'de000000-0000-4000-8000-0000000000e3'::uuid,
                            'a9000000-0000-4000-8000-0000000000e1'::uuid, 'worker_lost'::text, true, 1)$$,
                  'worker_lost writes one agent.chat.error with the reply''s user, deployment and agent');
select is((select status from public.agent_deployments where id = 'de000000-0000-4000-8000-0000000000e3'),
          'active', 'worker_lost does not touch the deployment');

select * from finish();
rollback;
