-- The worker's batched relay and counted claim (20261130140100_worker_batched_relay.sql): only the
-- worker (service_role) may call them; anon and authenticated may not. Both pin search_path and
-- run as their caller (not SECURITY DEFINER). Their behaviour is tested in
-- tests/integration/test_queue.py and tests/integration/test_worker_relay.py.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(20);

select function_privs_are('private', 'append_chat_deltas', array['text', 'bigint[]', 'integer[]', 'text[]'],
                          'anon', array[]::name[], 'anon cannot execute append_chat_deltas');
select function_privs_are('private', 'append_chat_deltas', array['text', 'bigint[]', 'integer[]', 'text[]'],
                          'authenticated', array[]::name[], 'authenticated cannot execute append_chat_deltas');
select function_privs_are('private', 'append_chat_deltas', array['text', 'bigint[]', 'integer[]', 'text[]'],
                          'service_role', array['EXECUTE'], 'the worker (service_role) may execute append_chat_deltas');
select function_privs_are('private', 'claim_chat_jobs_counted', array['text', 'integer', 'integer', 'bigint[]'],
                          'anon', array[]::name[], 'anon cannot execute claim_chat_jobs_counted');
select function_privs_are('private', 'claim_chat_jobs_counted', array['text', 'integer', 'integer', 'bigint[]'],
                          'authenticated', array[]::name[], 'authenticated cannot execute claim_chat_jobs_counted');
select function_privs_are('private', 'claim_chat_jobs_counted', array['text', 'integer', 'integer', 'bigint[]'],
                          'service_role', array['EXECUTE'], 'the worker (service_role) may execute claim_chat_jobs_counted');
select ok(not has_function_privilege('agentmarket_api', 'private.append_chat_deltas(text, bigint[], integer[], text[])', 'EXECUTE')
          and not has_function_privilege('agentmarket_api', 'private.claim_chat_jobs_counted(text, integer, integer, bigint[])', 'EXECUTE'),
          'the API login cannot execute the worker''s functions');
select isnt_definer('private', 'append_chat_deltas', array['text', 'bigint[]', 'integer[]', 'text[]'],
                    'append_chat_deltas runs as its caller');
select isnt_definer('private', 'claim_chat_jobs_counted', array['text', 'integer', 'integer', 'bigint[]'],
                    'claim_chat_jobs_counted runs as its caller');
select ok((select proconfig @> array['search_path=""'] from pg_proc
            where oid = 'private.append_chat_deltas(text, bigint[], integer[], text[])'::regprocedure),
          'append_chat_deltas pins search_path to empty');
select ok((select proconfig @> array['search_path=""'] from pg_proc
            where oid = 'private.claim_chat_jobs_counted(text, integer, integer, bigint[])'::regprocedure),
          'claim_chat_jobs_counted pins search_path to empty');

set local role anon;
select throws_ok($$select * from private.append_chat_deltas('w', '{1}', '{0}', '{x}')$$, '42501', null,
                 'anon is refused append_chat_deltas');
reset role;
set local role authenticated;
select throws_ok($$select * from private.claim_chat_jobs_counted('w', 1, 30)$$, '42501', null,
                 'authenticated is refused claim_chat_jobs_counted');
reset role;
set local role service_role;
select lives_ok($$select * from private.append_chat_deltas('pgtap-worker', '{}', '{}', '{}')$$,
                'service_role may call append_chat_deltas');
reset role;

-- A claimed job's context (20261130150100_claim_context_snapshot.sql): the worker's only.
select function_privs_are('private', 'chat_job_context', array['uuid', 'integer'],
                          'anon', array[]::name[], 'anon cannot execute chat_job_context');
select function_privs_are('private', 'chat_job_context', array['uuid', 'integer'],
                          'authenticated', array[]::name[], 'authenticated cannot execute chat_job_context');
select function_privs_are('private', 'chat_job_context', array['uuid', 'integer'],
                          'service_role', array['EXECUTE'], 'the worker (service_role) may execute chat_job_context');
select ok((select proconfig @> array['search_path=""'] from pg_proc
            where oid = 'private.chat_job_context(uuid, integer)'::regprocedure),
          'chat_job_context pins search_path to empty');
set local role authenticated;
select throws_ok($$select * from private.chat_job_context(gen_random_uuid(), 20)$$, '42501', null,
                 'authenticated is refused chat_job_context');
reset role;
set local role service_role;
select is((select count(*)::int from private.chat_job_context(gen_random_uuid(), 20)), 0,
          'a reply that is not there has no context');
reset role;

select * from finish();
rollback;
