"""How many SQL statements the API and the worker send per streamed short message, counted by
pg_stat_statements (loaded by ./scripts/test's cluster) on the real processes: a regression guard
for the round trips of the chat path (docs/architecture.md#the-path-of-a-chat-message)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.e2e.conftest import Stack, deploy, stream_short_messages

pytestmark = [pytest.mark.db, pytest.mark.e2e]

MESSAGES = 20
# Statements per streamed short message, API and worker together, background included (the
# worker's claims and queue-depth samples, the lease keeper, the event sink's batched flushes,
# whose count varies with timing). Measured at 15.3 to 16.5 on the tree that added this test
# (19.5 before its send stopped reading back a new reply's state and its final read served both
# the last delta and the finished message), 10.25 since the API's send and reads are one
# statement each in an implicit transaction, 6.2 since the worker claims with the job's context,
# claims again only when more jobs wait, and relays in one statement per tick for all replies (a
# short reply finishing before its first tick is not appended). The target is 10; the
# bound catches a path that grows.
BOUND = 8
# The API's share, exactly: the send and the final read, each one statement after the one that
# sets the caller's role and claims (docs/architecture.md#the-path-of-a-chat-message).
API_BOUND = 4
API_ROLES = ("agentmarket_api", "anon", "authenticated")
WORKER_ROLES = ("agentmarket_worker", "service_role")


def statements(conn: psycopg.Connection, roles: tuple[str, ...]) -> int:
    """Top-level statements run in this database by these roles (the API's and the worker's
    logins and the roles they become), since the last reset."""
    row = conn.execute(
        "select coalesce(sum(s.calls), 0)::bigint from pg_stat_statements s"
        " join pg_roles r on r.oid = s.userid"
        " where s.dbid = (select oid from pg_database where datname = current_database())"
        " and r.rolname = any(%s)",
        (list(roles),),
    ).fetchone()
    assert row is not None
    return int(row[0])


def by_statement(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """(calls, the statement's start) of the same statements, most called first."""
    rows = conn.execute(
        "select s.calls, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 100)"
        " from pg_stat_statements s join pg_roles r on r.oid = s.userid"
        " where s.dbid = (select oid from pg_database where datname = current_database())"
        " and r.rolname <> 'postgres' order by 1 desc"
    ).fetchall()
    return [(int(calls), str(text)) for calls, text in rows]


def test_statements_per_streamed_message(stack: Stack) -> None:
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_stat_statements")
        with stack.client(f"count-{uuid.uuid4().hex[:8]}@example.com") as client:
            deployment = deploy(client)
            time.sleep(1.5)  # let the deploy's events flush before counting
            conn.execute("select pg_stat_statements_reset()")
            started = time.monotonic()
            stream_short_messages(client, deployment, MESSAGES)
            elapsed = time.monotonic() - started
        api = statements(conn, API_ROLES)
        total = api + statements(conn, WORKER_ROLES)
        breakdown = "\n".join(f"{calls:5} {text}" for calls, text in by_statement(conn))
    per_message = total / MESSAGES
    print(
        f"{total} statements for {MESSAGES} streamed messages in {elapsed:.1f} s: {per_message}"
        f" (API {api / MESSAGES})"
    )
    assert per_message <= BOUND, breakdown
    assert api / MESSAGES <= API_BOUND, breakdown
