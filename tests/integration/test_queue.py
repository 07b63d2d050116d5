"""The chat queue's SQL: claiming (race-free), leases, fencing, dead jobs, release."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import uuid

import psycopg
import pytest

from agentmarket.ops.tokens import ensure_user

pytestmark = pytest.mark.db

CLAIM = "select id from private.claim_chat_jobs(%s, %s, %s)"
FINISH = "select private.finish_chat_job(%s, %s, 'completed', %s, null, null, 'm', 1, 2, 3, 4)"


def make_jobs(conn: psycopg.Connection, count: int) -> list[int]:
    user = ensure_user(conn, email=f"{uuid.uuid4().hex[:8]}@example.com")
    agent = conn.execute(
        "select id from public.marketplace_agents where slug = 'sql-sidekick'"
    ).fetchone()
    assert agent is not None
    with conn.transaction():
        deployment = conn.execute(
            "insert into public.agent_deployments (user_id, agent_id, name, status)"
            " values (%s, %s, 'q', 'active') returning id",
            (user.id, agent[0]),
        ).fetchone()
        assert deployment is not None
        conversation = conn.execute(
            "insert into public.agent_conversations (deployment_id, user_id)"
            " values (%s, %s) returning id",
            (deployment[0], user.id),
        ).fetchone()
        assert conversation is not None
        ids = []
        for i in range(count):
            question = conn.execute(
                "insert into public.agent_messages"
                " (conversation_id, user_id, role, content, status)"
                " values (%s, %s, 'user', %s, 'completed') returning id",
                (conversation[0], user.id, f"q{i}"),
            ).fetchone()
            assert question is not None
            reply = conn.execute(
                "insert into public.agent_messages"
                " (conversation_id, user_id, role, status, reply_to)"
                " values (%s, %s, 'assistant', 'queued', %s) returning id",
                (conversation[0], user.id, question[0]),
            ).fetchone()
            assert reply is not None
            job = conn.execute(
                "insert into private.chat_jobs (message_id) values (%s) returning id", (reply[0],)
            ).fetchone()
            assert job is not None
            ids.append(job[0])
    return ids


def test_two_workers_racing_never_claim_the_same_job(db_url: str, conn: psycopg.Connection) -> None:
    jobs = make_jobs(conn, 300)
    start = threading.Barrier(2)

    def drain(worker: str) -> list[int]:
        claimed: list[int] = []
        with psycopg.connect(db_url, autocommit=True) as own:
            start.wait()
            while True:
                rows = own.execute(CLAIM, (worker, 3, 30)).fetchall()
                if not rows:
                    return claimed
                claimed.extend(r[0] for r in rows)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(drain, ["worker-a", "worker-b"])
    assert set(a).isdisjoint(b)
    assert sorted(a + b) == sorted(jobs)
    assert a and b, "both workers should have won some claims"
    rows = conn.execute(
        "select status, attempts, count(*) from private.chat_jobs group by 1, 2"
    ).fetchall()
    assert rows == [("running", 1, 300)]


def test_an_expired_lease_is_reclaimed_and_the_old_worker_is_fenced_off(
    conn: psycopg.Connection,
) -> None:
    [job] = make_jobs(conn, 1)
    assert conn.execute(CLAIM, ("slow", 1, 30)).fetchall() == [(job,)]
    assert conn.execute(CLAIM, ("fast", 1, 30)).fetchall() == []  # leased
    conn.execute("update private.chat_jobs set locked_until = now() - interval '1 second'")
    assert conn.execute(CLAIM, ("fast", 1, 30)).fetchall() == [(job,)]
    # The stalled worker comes back: its writes are refused, the new owner's are kept.
    assert conn.execute(FINISH, (job, "slow", "stale")).fetchone() == (False,)
    assert conn.execute(
        "select private.append_chat_delta(%s, 'slow', 'stale')", (job,)
    ).fetchone() == (None,)
    assert conn.execute(FINISH, (job, "fast", "fresh")).fetchone() == (True,)
    row = conn.execute(
        "select m.status, m.content, j.status, j.attempts from private.chat_jobs j"
        " join public.agent_messages m on m.id = j.message_id where j.id = %s",
        (job,),
    ).fetchone()
    assert row == ("completed", "fresh", "completed", 2)
    assert conn.execute(FINISH, (job, "fast", "again")).fetchone() == (False,)  # never twice


def test_a_job_out_of_attempts_fails_its_message(conn: psycopg.Connection) -> None:
    [job] = make_jobs(conn, 1)
    conn.execute(
        "update private.chat_jobs set status = 'running', attempts = max_attempts,"
        " locked_by = 'gone', locked_until = now() - interval '1 second' where id = %s",
        (job,),
    )
    assert conn.execute(CLAIM, ("next", 5, 30)).fetchall() == []
    row = conn.execute(
        "select j.status, m.status, m.error_code from private.chat_jobs j"
        " join public.agent_messages m on m.id = j.message_id where j.id = %s",
        (job,),
    ).fetchone()
    assert row == ("failed", "failed", "worker_lost")


def test_release_gives_the_job_back_without_spending_an_attempt(conn: psycopg.Connection) -> None:
    [job] = make_jobs(conn, 1)
    conn.execute(CLAIM, ("leaving", 1, 30))
    conn.execute("select private.append_chat_delta(%s, 'leaving', 'half')", (job,))
    assert conn.execute("select private.release_chat_job(%s, 'leaving')", (job,)).fetchone() == (
        True,
    )
    row = conn.execute(
        "select j.status, j.attempts, m.status, m.content from private.chat_jobs j"
        " join public.agent_messages m on m.id = j.message_id where j.id = %s",
        (job,),
    ).fetchone()
    assert row == ("queued", 0, "queued", "")
    assert conn.execute(CLAIM, ("staying", 1, 30)).fetchall() == [(job,)]


def test_deltas_are_appended_and_published_with_offsets(
    db_url: str, conn: psycopg.Connection
) -> None:
    [job] = make_jobs(conn, 1)
    conn.execute(CLAIM, ("w", 1, 30))
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen agentmarket_chat_stream")
        assert conn.execute(
            "select private.append_chat_delta(%s, 'w', 'Hello')", (job,)
        ).fetchone() == (5,)
        assert conn.execute(
            "select private.append_chat_delta(%s, 'w', ', world')", (job,)
        ).fetchone() == (12,)
        payloads = [n.payload for n in listener.notifies(timeout=1, stop_after=2)]
    events = [json.loads(p) for p in payloads]
    assert [(e["e"], e["o"], e["d"], e["g"]) for e in events] == [
        ("delta", 0, "Hello", 1),
        ("delta", 5, ", world", 1),
    ]


def _as_owner(conn: psycopg.Connection, job: int) -> str:
    """Switch this transaction to the job's owner, as PostgREST would; returns the user id."""
    owner = conn.execute(
        "select m.user_id from private.chat_jobs j join public.agent_messages m"
        " on m.id = j.message_id where j.id = %s",
        (job,),
    ).fetchone()
    assert owner is not None
    claims = json.dumps({"sub": str(owner[0]), "role": "authenticated"})
    conn.execute(
        "select set_config('role', 'authenticated', true),"
        " set_config('request.jwt.claims', %s, true)",
        (claims,),
    )
    return str(owner[0])


def _parents(conn: psycopg.Connection, job: int) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """(deployment, conversation, message) of a job's reply."""
    row = conn.execute(
        "select c.deployment_id, c.id, m.id from private.chat_jobs j"
        " join public.agent_messages m on m.id = j.message_id"
        " join public.agent_conversations c on c.id = m.conversation_id where j.id = %s",
        (job,),
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def _listening(db_url: str) -> psycopg.Connection:
    listener = psycopg.connect(db_url, autocommit=True)
    listener.execute("listen agentmarket_chat_stream")
    listener.execute("listen agentmarket_chat_cancel")
    return listener


def _reply_states(conn: psycopg.Connection, jobs: list[int]) -> list[tuple[object, ...]]:
    return conn.execute(
        "select j.status, m.status, m.error_code, m.completed_at is not null"
        " from private.chat_jobs j join public.agent_messages m on m.id = j.message_id"
        " where j.id = any(%s) order by j.id",
        (jobs,),
    ).fetchall()


def test_deleting_a_deployment_cancels_its_queued_and_running_replies(
    db_url: str, conn: psycopg.Connection
) -> None:
    done, running, queued = make_jobs(conn, 3)
    conn.execute(
        "update private.chat_jobs set run_after = now() + interval '1 hour' where id = %s",
        (queued,),
    )
    assert conn.execute(CLAIM, ("w", 2, 30)).fetchall() == [(done,), (running,)]
    assert conn.execute(FINISH, (done, "w", "answered")).fetchone() == (True,)
    conn.execute("select private.append_chat_delta(%s, 'w', 'half an ans')", (running,))
    deployment = _parents(conn, running)[0]
    with _listening(db_url) as listener:
        with conn.transaction():
            _as_owner(conn, running)
            assert conn.execute(
                "select private.delete_deployment(%s)", (deployment,)
            ).fetchone() == (True,)
        notices = [(n.channel, n.payload) for n in listener.notifies(timeout=1, stop_after=4)]
    assert _reply_states(conn, [done, running, queued]) == [
        ("completed", "completed", None, True),
        ("cancelled", "cancelled", "deployment_deleted", True),
        ("cancelled", "cancelled", "deployment_deleted", True),
    ]
    # The partial text is kept; the worker that was writing it is fenced off.
    assert conn.execute(
        "select m.content from private.chat_jobs j join public.agent_messages m"
        " on m.id = j.message_id where j.id = %s",
        (running,),
    ).fetchone() == ("half an ans",)
    assert conn.execute(
        "select private.append_chat_delta(%s, 'w', 'wer')", (running,)
    ).fetchone() == (None,)
    assert conn.execute(FINISH, (running, "w", "late answer")).fetchone() == (False,)
    assert conn.execute(CLAIM, ("next", 5, 30)).fetchall() == []
    # Each stream got its terminal event; the worker was told to stop.
    streams = [json.loads(p) for c, p in notices if c == "agentmarket_chat_stream"]
    assert sorted((e["e"], e["s"]) for e in streams) == [("done", "cancelled")] * 2
    assert len([c for c, _ in notices if c == "agentmarket_chat_cancel"]) == 2
    # Every unfinished reply counts in its conversation like any finished one.
    assert conn.execute(
        "select c.message_count from public.agent_conversations c where c.deployment_id = %s",
        (deployment,),
    ).fetchone() == (3,)


def test_deleting_a_conversation_ends_the_streams_of_its_unfinished_replies(
    db_url: str, conn: psycopg.Connection
) -> None:
    done, running = make_jobs(conn, 2)
    conn.execute(CLAIM, ("w", 2, 30))
    conn.execute(FINISH, (done, "w", "answered"))
    ids = _parents(conn, running)
    with _listening(db_url) as listener:
        with conn.transaction():
            _as_owner(conn, running)
            assert conn.execute(
                "select private.delete_conversation(%s, %s)", (ids[0], ids[1])
            ).fetchone() == (True,)
        notices = [(n.channel, n.payload) for n in listener.notifies(timeout=1, stop_after=2)]
    assert [c for c, _ in notices].count("agentmarket_chat_cancel") == 1
    assert dict(notices)["agentmarket_chat_cancel"] == str(ids[2])
    assert json.loads(dict(notices)["agentmarket_chat_stream"]) == {
        "m": str(ids[2]),
        "e": "done",
        "g": 1,
        "s": "cancelled",
    }
    assert conn.execute("select count(*) from private.chat_jobs").fetchone() == (0,)


def test_another_users_delete_cancels_nothing(conn: psycopg.Connection) -> None:
    [job] = make_jobs(conn, 1)
    deployment, conversation, _ = _parents(conn, job)
    stranger = ensure_user(conn, email="stranger@example.com")
    with conn.transaction():
        conn.execute(
            "select set_config('role', 'authenticated', true),"
            " set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": str(stranger.id), "role": "authenticated"}),),
        )
        assert conn.execute("select private.delete_deployment(%s)", (deployment,)).fetchone() == (
            False,
        )
        assert conn.execute(
            "select private.delete_conversation(%s, %s)", (deployment, conversation)
        ).fetchone() == (False,)
    assert _reply_states(conn, [job]) == [("queued", "queued", None, False)]


DELTAS = "select job_id, new_length from private.append_chat_deltas(%s, %s, %s, %s) order by 1"


def test_one_statement_appends_and_publishes_the_text_of_several_replies(
    db_url: str, conn: psycopg.Connection
) -> None:
    a, b, other = make_jobs(conn, 3)
    conn.execute(CLAIM, ("w", 2, 30))
    conn.execute(CLAIM, ("someone-else", 1, 30))
    conn.execute(DELTAS, ("w", [a], [0], ["Hel"]))
    with psycopg.connect(db_url, autocommit=True) as listener:
        listener.execute("listen agentmarket_chat_stream")
        rows = conn.execute(
            DELTAS, ("w", [b, a, a, other], [0, 3, 5, 0], ["Hi", "lo", ", all", "x"])
        ).fetchall()
        payloads = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=3)]
    # a: its two pieces after the 3 stored characters; b: from 0; not our job: refused.
    assert rows == [(a, 10), (b, 2), (other, None)]
    stored: dict[int, str] = dict(
        conn.execute(
            "select j.id, m.content from private.chat_jobs j"
            " join public.agent_messages m on m.id = j.message_id where j.id = any(%s)",
            ([a, b, other],),
        ).fetchall()
    )
    assert stored == {a: "Hello, all", b: "Hi", other: ""}
    a_message = conn.execute("select message_id from private.chat_jobs where id = %s", (a,))
    a_id = str(a_message.fetchone()[0])  # type: ignore[index]
    assert sorted((p["m"] == a_id, p["o"], p["d"], p["e"], p["g"]) for p in payloads) == [
        (False, 0, "Hi", "delta", 1),
        (True, 3, "lo", "delta", 1),
        (True, 5, ", all", "delta", 1),
    ]


def test_a_batch_sent_again_is_not_appended_twice_and_a_gap_is_refused(
    conn: psycopg.Connection,
) -> None:
    [job] = make_jobs(conn, 1)
    conn.execute(CLAIM, ("w", 1, 30))
    batch = ("w", [job], [0], ["once"])
    assert conn.execute(DELTAS, batch).fetchall() == [(job, 4)]

    assert conn.execute(DELTAS, batch).fetchall() == [(job, 4)]  # the answer was lost: sent again
    assert conn.execute(DELTAS, ("w", [job], [9], ["gap"])).fetchall() == [(job, None)]

    content = conn.execute(
        "select m.content from private.chat_jobs j join public.agent_messages m"
        " on m.id = j.message_id where j.id = %s",
        (job,),
    ).fetchone()
    assert content == ("once",)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(DELTAS, ("w", [job], [4, 5], ["a"]))


def test_an_append_after_the_finish_is_refused(conn: psycopg.Connection) -> None:
    [job] = make_jobs(conn, 1)
    conn.execute(CLAIM, ("w", 1, 30))
    conn.execute(DELTAS, ("w", [job], [0], ["Hel"]))
    assert conn.execute(FINISH, (job, "w", "Hello")).fetchone() == (True,)

    assert conn.execute(DELTAS, ("w", [job], [3], ["lo"])).fetchall() == [(job, None)]

    content = conn.execute(
        "select m.content from private.chat_jobs j join public.agent_messages m"
        " on m.id = j.message_id where j.id = %s",
        (job,),
    ).fetchone()
    assert content == ("Hello",)


COUNTED = "select id, more from private.claim_chat_jobs_counted(%s, %s, %s)"


def test_a_claim_says_whether_more_jobs_are_waiting(conn: psycopg.Connection) -> None:
    jobs = make_jobs(conn, 3)

    first = conn.execute(COUNTED, ("w", 2, 30)).fetchall()
    assert [job for job, _ in first] == jobs[:2]
    assert all(more for _, more in first)  # full, and a third one waits

    last = conn.execute(COUNTED, ("w", 1, 30)).fetchall()
    assert last == [(jobs[2], False)]  # full, and nothing else waits
    assert conn.execute(COUNTED, ("w", 5, 30)).fetchall() == []
    # An expired lease is claimable again: it counts as waiting.
    conn.execute(
        "update private.chat_jobs set locked_until = now() - interval '1 second' where id = %s",
        (jobs[0],),
    )
    conn.execute(
        "update private.chat_jobs set locked_until = now() - interval '1 second' where id = %s",
        (jobs[1],),
    )
    again = conn.execute(COUNTED, ("w2", 1, 30)).fetchall()
    assert again == [(jobs[0], True)]


SPARING = "select id, more from private.claim_chat_jobs_counted(%s, %s, %s, %s)"


def test_a_worker_never_takes_over_a_job_it_is_still_running(conn: psycopg.Connection) -> None:
    """A stall past the lease must not start a second attempt in the same worker; another
    worker may still take the job over, and one the worker no longer runs is taken as before."""
    first, second = make_jobs(conn, 2)
    assert conn.execute(SPARING, ("w", 2, 30, [])).fetchall() == [(first, False), (second, False)]
    conn.execute("update private.chat_jobs set locked_until = now() - interval '1 second'")

    # Both still run in "w": its claim leaves them alone and sees nothing else waiting.
    assert conn.execute(SPARING, ("w", 5, 30, [first, second])).fetchall() == []
    assert conn.execute(SPARING, ("w", 1, 30, [first])).fetchall() == [(second, False)]
    # Another worker may take over what "w" stalled on.
    assert conn.execute(SPARING, ("other", 5, 30, [first])).fetchall() == [(first, False)]
    attempts = conn.execute(
        "select id, attempts, locked_by from private.chat_jobs order by id"
    ).fetchall()
    assert attempts == [(first, 2, "other"), (second, 2, "w")]


def test_the_sweep_of_jobs_out_of_attempts_spares_the_ones_running_here(
    conn: psycopg.Connection,
) -> None:
    [job] = make_jobs(conn, 1)
    conn.execute(
        "update private.chat_jobs set status = 'running', attempts = max_attempts,"
        " locked_by = 'w', locked_until = now() - interval '1 second' where id = %s",
        (job,),
    )
    assert conn.execute(SPARING, ("w", 5, 30, [job])).fetchall() == []
    assert conn.execute("select status from private.chat_jobs").fetchone() == ("running",)
    # Once "w" no longer runs it, its own sweep fails it like anyone's.
    assert conn.execute(SPARING, ("w", 5, 30, [])).fetchall() == []
    assert conn.execute("select status from private.chat_jobs").fetchone() == ("failed",)
