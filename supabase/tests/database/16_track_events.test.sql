-- private.track_events(jsonb) (20261130164000_track_events_batch.sql): the functions' telemetry
-- sink writes a batch of events in one call. Each row takes its user from the caller's claims,
-- never from the payload (A cannot write as B); anon writes anonymous rows; a malformed batch or
-- one over 10 000 events is refused whole; PUBLIC cannot call it.
-- Conventions (role switching, claims, SQLSTATEs): see 01_structure.test.sql.
begin;
set local search_path = public, extensions;

select plan(9);

insert into auth.users (id, email, raw_app_meta_data) values
  ('a0000000-0000-4000-8000-00000000000a', 'pgtap-a@example.test', '{}'),
  ('b0000000-0000-4000-8000-00000000000b', 'pgtap-b@example.test', '{}');

select ok(
  not has_function_privilege('public', 'private.track_events(jsonb)', 'execute'),
  'PUBLIC may not call track_events'
);

-- A writes two events, one of them claiming to be B's.
set local role authenticated;
set local request.jwt.claims to '{"sub":"a0000000-0000-4000-8000-00000000000a","role":"authenticated","app_metadata":{}}';
select is(
  private.track_events('[
    {"name": "marketplace.agent.viewed", "agent_id": null, "properties": {"slug": "x"}},
    {"name": "marketplace.search.performed", "user_id": "b0000000-0000-4000-8000-00000000000b",
     "properties": {"q": "sql"}}
  ]'::jsonb),
  2,
  'an authenticated caller writes a batch'
);

-- anon writes one.
set local role anon;
set local request.jwt.claims to '{"role":"anon"}';
select is(
  private.track_events('[{"name": "marketplace.agent.viewed", "properties": {}}]'::jsonb),
  1,
  'anon writes a batch'
);
select throws_ok(
  $$select private.track_events('{"name": "marketplace.agent.viewed"}'::jsonb)$$,
  '22023', null, 'a batch must be an array'
);
select throws_ok(
  $$select private.track_events((select jsonb_agg(jsonb_build_object('name', 'marketplace.agent.viewed'))
      from generate_series(1, 10001)))$$,
  '22023', null, 'more than 10 000 events are refused'
);
select throws_ok(
  $$select private.track_events('[{"name": "marketplace.agent.viewed"}, {"name": "Not A Name"}]'::jsonb)$$,
  '23514', null, 'one bad name refuses the whole batch'
);
reset role;

select results_eq(
  $$select name, user_id, properties from private.telemetry_events order by id$$,
  $$values
      ('marketplace.agent.viewed', 'a0000000-0000-4000-8000-00000000000a'::uuid, '{"slug": "x"}'::jsonb),
      ('marketplace.search.performed', 'a0000000-0000-4000-8000-00000000000a'::uuid, '{"q": "sql"}'::jsonb),
      ('marketplace.agent.viewed', null::uuid, '{}'::jsonb)$$,
  'rows carry the caller''s user (never one from the payload) and nothing of the refused batches'
);
select is(
  (select count(*)::int from private.telemetry_events where user_id = 'b0000000-0000-4000-8000-00000000000b'),
  0,
  'A wrote nothing as B'
);
select ok(
  (select bool_and(created_at = now()) from private.telemetry_events),
  'the database stamps the time'
);

select * from finish();
rollback;
