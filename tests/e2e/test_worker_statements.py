"""The worker's own statements, counted by pg_stat_statements on the real processes
(docs/architecture.md#worker): per short streamed message (one claim that also loads the reply's
context, one finish; no append when the reply is done before the relay's first tick), and the
relay's statements for many long replies streaming at once (one per tick for all of them, not one
per reply per tick)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.e2e.conftest import Stack, deploy, stream_short_messages

pytestmark = [pytest.mark.db, pytest.mark.e2e]

WORKER_ROLES = ("agentmarket_worker", "service_role")


def worker_statements(conn: psycopg.Connection) -> list[tuple[int, int, str]]:
    """(calls, rows, the statement's start) of the worker's statements since the last reset."""
    rows = conn.execute(
        "select s.calls, s.rows, regexp_replace(s.query, '\\s+', ' ', 'g')"
        " from pg_stat_statements s join pg_roles r on r.oid = s.userid"
        " where s.dbid = (select oid from pg_database where datname = current_database())"
        " and r.rolname = any(%s) order by 1 desc",
        (list(WORKER_ROLES),),
    ).fetchall()
    return [(int(calls), int(count), str(text)) for calls, count, text in rows]


def calls_of(statements: list[tuple[int, int, str]], fragment: str) -> tuple[int, int]:
    """Calls and rows of the statements containing `fragment`."""
    matching = [(calls, rows) for calls, rows, text in statements if fragment in text]
    return sum(c for c, _ in matching), sum(r for _, r in matching)


def breakdown(statements: list[tuple[int, int, str]]) -> str:
    return "\n".join(f"{calls:5} {rows:6} {text[:90]}" for calls, rows, text in statements)


def reset(conn: psycopg.Connection) -> None:
    conn.execute("create extension if not exists pg_stat_statements")
    conn.execute("select pg_stat_statements_reset()")


def test_the_worker_claims_and_loads_once_and_finishes_once_per_short_message(
    stack: Stack,
) -> None:
    messages = 20
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        with stack.client(f"worker-count-{uuid.uuid4().hex[:8]}@example.com") as client:
            deployment = deploy(client)
            time.sleep(1.5)  # the deploy's own work is done before counting
            reset(conn)
            stream_short_messages(client, deployment, messages)
        statements = worker_statements(conn)
    total = sum(calls for calls, _, _ in statements)
    claims, _ = calls_of(statements, "claim_chat_jobs")
    finishes, _ = calls_of(statements, "finish_chat_job")
    print(f"worker: {total / messages:.2f} statements per short message\n{breakdown(statements)}")
    assert finishes == messages
    # One claim per message (a job's end does not claim again when the queue was empty); a poll
    # may add one now and then.
    assert claims <= messages * 1.25, breakdown(statements)
    # claim (with the context) + finish, plus the background's share (polls, queue-depth
    # samples, lease extensions) and, on a slow machine, an append for a reply still streaming
    # at its first tick. Measured at 2.2 (6.3 before the relay was batched, the claim loaded
    # the context and a job's end stopped claiming again).
    assert total / messages <= 3.5, breakdown(statements)


def test_long_replies_streaming_at_once_share_one_relay_statement_per_tick(stack: Stack) -> None:
    replies = 10
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        with stack.client(f"worker-relay-{uuid.uuid4().hex[:8]}@example.com") as client:
            deployment = deploy(client)
            time.sleep(1.5)
            reset(conn)
            started = time.monotonic()
            ids = [
                client.post(
                    f"/api/agents/{deployment}/chat",
                    json={"message": f"[[long:150]] [[tps:50]] reply {i}", "mode": "async"},
                ).json()["assistant_message"]["id"]
                for i in range(replies)
            ]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = conn.execute(
                    "select count(*) from public.agent_messages"
                    " where id = any(%s) and status = 'completed'",
                    (ids,),
                ).fetchone()
                if done == (replies,):
                    break
                time.sleep(0.1)
            elapsed = time.monotonic() - started
        statements = worker_statements(conn)
    calls, rows = calls_of(statements, "append_chat_delta")
    print(
        f"{replies} long replies at once in {elapsed:.1f} s: {calls} relay statements carrying"
        f" {rows} reply batches\n{breakdown(statements)}"
    )
    assert done == (replies,)
    # One statement per tick for all the replies: most statements carry several replies, and
    # there are about as many as ticks (flush_interval 0.1 s; the first pieces' shorter ticks
    # are a few more), not one per reply per tick.
    assert calls * 3 <= rows, breakdown(statements)
    assert calls <= elapsed / 0.1 * 1.5 + replies, breakdown(statements)
