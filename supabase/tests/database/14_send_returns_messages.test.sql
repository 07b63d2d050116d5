-- private.send_chat_message answers with its two messages (20261130140000_send_returns_messages.sql),
-- called as `authenticated`: one row per message, the user's first, each with the exchange's
-- columns; the reply's id as the API chose it (or the database's choice); a new message's
-- agent.chat.message.sent event in the same transaction; a repeated client_message_id returns
-- the two messages as they stand now, uncounted and unrecorded, whatever reply id it proposes; a
-- refusal still stores nothing. Grants and SECURITY DEFINER: also 01_structure.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(27);

-- Fixtures (as postgres) ---------------------------------------------------------------------------
insert into auth.users (id, email, raw_app_meta_data) values
  ('f1000000-0000-4000-8000-00000000000f', 'pgtap-send-f@example.test', '{}'),
  ('f2000000-0000-4000-8000-00000000000f', 'pgtap-send-g@example.test', '{}');
insert into public.marketplace_agents
  (id, slug, name, category, kind, pricing_model, is_published, rate_limit_per_minute) values
  ('a9000000-0000-4000-8000-0000000000f1', 'pgtap-send', 'pgTAP send', 'testing', 'chat', 'free', true, 1000);
insert into public.agent_deployments (id, user_id, agent_id, name, config, status) values
  ('df000000-0000-4000-8000-0000000000f1', 'f1000000-0000-4000-8000-00000000000f',
   'a9000000-0000-4000-8000-0000000000f1', 'F chat', '{}', 'active'),
  ('df000000-0000-4000-8000-0000000000f2', 'f2000000-0000-4000-8000-00000000000f',
   'a9000000-0000-4000-8000-0000000000f1', 'G chat', '{}', 'active');
update private.app_settings
   set chat_per_minute = 100, max_in_flight_per_user = 100, platform_tokens_per_day = 0;

-- What the sends answered, in the order they answered it.
create temp table sent as
  select 0 as send, * from private.send_chat_message(null, null, null, null, null, null, null)
    with ordinality with no data;
grant all on sent to public;

select function_privs_are('private', 'send_chat_message', array['uuid', 'uuid', 'text', 'text', 'text', 'uuid', 'text'],
                          'anon', array[]::text[], 'anon may not send');
select function_privs_are('private', 'send_chat_message', array['uuid', 'uuid', 'text', 'text', 'text', 'uuid', 'text'],
                          'authenticated', array['EXECUTE'], 'authenticated may send');
select is_definer('private', 'send_chat_message', array['uuid', 'uuid', 'text', 'text', 'text', 'uuid', 'text'],
                  'send_chat_message is SECURITY DEFINER');

-- A new send (F) ------------------------------------------------------------------------------------
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "f1000000-0000-4000-8000-00000000000f", "role": "authenticated", "app_metadata": {}}';

insert into sent
  select 1, * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'hello there',
                                             'client-1', 'trace-1', 'ee000000-0000-4000-8000-0000000000a1',
                                             'streaming')
    with ordinality;
insert into sent
  select 2, * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'no id given',
                                             null, null, null)
    with ordinality;
reset role;

select results_eq($$select role, status, content from sent where send = 1 order by ordinality$$,
                  $$values ('user'::text, 'completed'::text, 'hello there'::text),
                           ('assistant', 'queued', '')$$,
                  'a send answers with two rows: the user message, then the queued reply with no text');
select is((select id from sent where send = 1 and role = 'assistant'),
          'ee000000-0000-4000-8000-0000000000a1'::uuid, 'the reply has the id the caller chose');
select ok((select bool_and(created) and count(distinct conversation_id) = 1 from sent where send = 1),
          'both rows say created, with the one conversation');
select results_eq($$select quota_policy, quota_limit, quota_remaining from sent where send = 1$$,
                  $$values ('chat'::text, 100, 99), ('chat'::text, 100, 99)$$,
                  'both rows carry the quota for the RateLimit headers');
select is_empty($$
  select id, conversation_id, role, content, status, error_code, error_message, model, prompt_tokens,
         completion_tokens, ttft_ms, latency_ms, truncated, created_at, completed_at
    from sent where send = 1
  except
  select id, conversation_id, role, content, status, error_code, error_message, model, prompt_tokens,
         completion_tokens, ttft_ms, latency_ms, truncated, created_at, completed_at
    from public.agent_messages
$$, 'the rows are the messages as stored');
select is((select m.reply_to from public.agent_messages m
             where m.id = 'ee000000-0000-4000-8000-0000000000a1'),
          (select u.id from sent u where u.send = 1 and u.role = 'user'),
          'the reply answers the user message');
select is((select count(*)::int from private.chat_jobs
            where message_id = 'ee000000-0000-4000-8000-0000000000a1' and trace_id = 'trace-1'),
          1, 'its job is queued');
select is((select model from sent where send = 1 and role = 'assistant'),
          (select model from public.marketplace_agents where id = 'a9000000-0000-4000-8000-0000000000f1'),
          'the reply names the agent''s model');
select results_eq($$select deployment_id, properties from private.telemetry_events
                     where name = 'agent.chat.message.sent'
                       and user_id = 'f1000000-0000-4000-8000-00000000000f'$$,
                  $$select 'df000000-0000-4000-8000-0000000000f1'::uuid,
                           jsonb_build_object('message_id', id, 'conversation_id', conversation_id,
                                              'message_length', 11, 'mode', 'streaming')
                      from sent where send = 1 and role = 'user'$$,
                  'a new message records agent.chat.message.sent in the same transaction (none without a mode)');
select results_eq($$select role from sent where send = 2 order by ordinality$$,
                  $$values ('user'::text), ('assistant')$$,
                  'without a chosen id: the same two rows');
select ok((select id is not null and id <> 'ee000000-0000-4000-8000-0000000000a1'
             from sent where send = 2 and role = 'assistant'),
          'and the database chose the reply''s id');

-- A repeat of client-1 after the reply moved on --------------------------------------------------------
update public.agent_messages set status = 'running', content = 'partial answer'
 where id = 'ee000000-0000-4000-8000-0000000000a1';

set local role authenticated;
set local request.jwt.claims to
  '{"sub": "f1000000-0000-4000-8000-00000000000f", "role": "authenticated", "app_metadata": {}}';
insert into sent
  select 3, * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'hello there',
                                             'client-1', null, 'ee000000-0000-4000-8000-0000000000a3',
                                             'blocking')
    with ordinality;
reset role;

select results_eq($$select id, role, status, content, created from sent where send = 3 order by ordinality$$,
                  $$select id, role, status, content, false from sent where send = 1 and role = 'user'
                    union all
                    select 'ee000000-0000-4000-8000-0000000000a1'::uuid, 'assistant', 'running',
                           'partial answer', false$$,
                  'a repeat answers the original two messages as they stand now, not created');
select is((select quota_remaining from sent where send = 3 limit 1),
          (select remaining from private.rate_limit_peek('chat:f1000000-0000-4000-8000-00000000000f', 100)),
          'a repeat is not counted: the user''s rate as it stands');
select is((select count(*)::int from public.agent_messages where id = 'ee000000-0000-4000-8000-0000000000a3'),
          0, 'the id a repeat proposes is not used');
select is((select count(*)::int from public.agent_messages where user_id = 'f1000000-0000-4000-8000-00000000000f'),
          4, 'nothing was stored by the repeat');
select is((select count(*)::int from private.telemetry_events where name = 'agent.chat.message.sent'
            and user_id = 'f1000000-0000-4000-8000-00000000000f'),
          1, 'nor recorded');

-- Refusals still store nothing ------------------------------------------------------------------------
update private.app_settings set max_in_flight_per_user = 2;
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "f1000000-0000-4000-8000-00000000000f", "role": "authenticated", "app_metadata": {}}';
select throws_ok($$select * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'one more',
                                                           null, null, 'ee000000-0000-4000-8000-0000000000a4')$$,
                 'AMINF', 'too many replies in flight', 'two replies in flight: the third is refused');
select throws_ok($$select * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'odd mode',
                                                           null, null, null, 'shouting')$$,
                 '22023', 'mode must be blocking, streaming or async', 'an unknown mode is refused');
select throws_ok($$select * from private.send_chat_message('df000000-0000-4000-8000-0000000000f2', null, 'not mine',
                                                           null, null, 'ee000000-0000-4000-8000-0000000000a5')$$,
                 'AMNF2', 'deployment not found', 'another user''s deployment is not found');
select throws_ok($$select * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'a repeat id',
                                                           null, null, 'ee000000-0000-4000-8000-0000000000a1')$$,
                 'AMINF', 'too many replies in flight', 'the limits come before the chosen id is used');
reset role;
update private.app_settings set max_in_flight_per_user = 100;
set local role authenticated;
set local request.jwt.claims to
  '{"sub": "f1000000-0000-4000-8000-00000000000f", "role": "authenticated", "app_metadata": {}}';
select throws_ok($$select * from private.send_chat_message('df000000-0000-4000-8000-0000000000f1', null, 'taken id',
                                                           null, null, 'ee000000-0000-4000-8000-0000000000a1')$$,
                 '23505', null, 'an id already taken is refused, nothing else changes');
reset role;
select is((select count(*)::int from public.agent_messages
            where id in ('ee000000-0000-4000-8000-0000000000a4', 'ee000000-0000-4000-8000-0000000000a5')),
          0, 'the refused sends stored nothing');
select is((select count(*)::int from public.agent_messages where user_id = 'f1000000-0000-4000-8000-00000000000f'),
          4, 'nor any other message');
select is((select count(*)::int from private.telemetry_events where user_id = 'f1000000-0000-4000-8000-00000000000f'),
          1, 'nor any event');

select * from finish();
rollback;
