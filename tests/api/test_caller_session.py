"""CallerSession, the one connection style of the services: the request transaction opens on
first use and commits on close (rolls back when the request failed); `commit()` ends it early
(before waiting on a model) and `transaction()` runs a separate short transaction as the same
caller; `run()` runs one statement as the caller in an implicit transaction of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.config import Settings
from agentmarket.core.errors import DatabaseUnavailable, DeploymentNotFound
from agentmarket.db.caller import CallerSession, run_as_caller
from agentmarket.db.pool import create_pool
from agentmarket.services.telemetry import track
from tests.api.conftest import Caller

pytestmark = pytest.mark.db


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    pool = create_pool(settings, min_size=1, max_size=2)
    await pool.open(wait=True)  # ready before the test: no growth while it runs
    yield pool
    await pool.close()


def claims(caller: Caller) -> dict[str, str]:
    return {"sub": str(caller.user.id), "role": "authenticated"}


def stored(conn: psycopg.Connection, caller: Caller) -> int:
    row = conn.execute(
        "select count(*) from private.telemetry_events where user_id = %s", (caller.user.id,)
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_nothing_opens_until_used_and_close_commits(
    pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    async with CallerSession(pool, claims(alice)) as db:
        assert db.user_id == str(alice.user.id)
        assert pool.get_stats().get("requests_num", 0) == 0
        await track("marketplace.agent.viewed", db=db, slug="x")
        assert stored(conn, alice) == 0  # not yet committed
    assert stored(conn, alice) == 1


async def failing_request(pool: AsyncConnectionPool, caller: Caller) -> None:
    async with CallerSession(pool, claims(caller)) as db:
        await track("marketplace.agent.viewed", db=db, slug="x")
        raise RuntimeError("the route failed")


async def test_a_failed_request_rolls_back(
    pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    with pytest.raises(RuntimeError, match="the route failed"):
        await failing_request(pool, alice)
    assert stored(conn, alice) == 0


async def test_commit_ends_the_request_transaction_early(
    pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    async with CallerSession(pool, claims(alice)) as db:
        first = await db.conn()
        cur = await first.execute("select txid_current()")
        before = await cur.fetchone()
        await track("marketplace.agent.viewed", db=db, slug="x")
        await db.commit()
        # Committed and the connection is back in the pool before the request ends.
        assert stored(conn, alice) == 1
        assert pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
        async with db.transaction() as short:
            cur = await short.execute("select current_user, auth.uid()::text")
            assert await cur.fetchone() == ("authenticated", str(alice.user.id))
        # A later use opens a new request transaction.
        cur = await (await db.conn()).execute("select txid_current()")
        assert await cur.fetchone() != before
    assert stored(conn, alice) == 1


# --- one statement in a transaction of its own ---------------------------------------------------

WHO = "select current_user::text as role, auth.uid()::text as uid"
# What the connection carries outside any transaction: the login and no claims.
SEND = "select * from private.send_chat_message(%(id)s, null, 'hi', null, null)"
SETTINGS = (
    "select current_user::text, session_user::text,"
    " coalesce(current_setting('request.jwt.claims', true), '') as claims"
)


@pytest.fixture
async def one_conn_pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    """A pool of exactly one connection: every use is the same connection."""
    pool = create_pool(settings, min_size=1, max_size=1)
    await pool.open(wait=True)
    yield pool
    await pool.close()


async def test_run_runs_one_statement_as_the_caller_without_begin_or_commit(
    one_conn_pool: AsyncConnectionPool, alice: Caller
) -> None:
    db = CallerSession(one_conn_pool, claims(alice))
    rows = await db.run(WHO, {})
    assert rows == [{"role": "authenticated", "uid": str(alice.user.id)}]
    # Values are bound (client-side), even ones that look like SQL.
    rows = await db.run("select %(text)s::text as echoed", {"text": "it's; select 1 -- %s"})
    assert rows == [{"echoed": "it's; select 1 -- %s"}]
    # Anonymous callers too.
    assert await run_as_caller(one_conn_pool, None, WHO, {}) == [{"role": "anon", "uid": None}]


async def test_run_leaves_the_connection_without_role_or_claims(
    one_conn_pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    db = CallerSession(one_conn_pool, claims(alice))
    async with one_conn_pool.connection() as pooled:
        pid = pooled.info.backend_pid
    await db.run(WHO, {})
    with pytest.raises(DeploymentNotFound):
        # A statement that fails: its implicit transaction ends as well.
        await db.run(SEND, {"id": uuid.uuid4()})
    async with one_conn_pool.connection() as pooled:
        assert pooled.info.backend_pid == pid  # the same connection, used next
        assert pooled.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        cur = await pooled.execute(SETTINGS)
        assert await cur.fetchone() == ("agentmarket_api", "agentmarket_api", "")


async def test_run_commits_before_it_returns_and_rolls_back_when_it_fails(
    one_conn_pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    db = CallerSession(one_conn_pool, claims(alice))
    track = "select private.track_event('marketplace.agent.viewed', null, null, '{}'::jsonb)"
    await db.run(track, {})
    assert stored(conn, alice) == 1  # visible to another connection at once
    with pytest.raises(psycopg.errors.DivisionByZero):
        await db.run(track + ", 1 / (select 0) as boom", {})
    assert stored(conn, alice) == 1


async def test_run_maps_errors_like_a_caller_transaction(
    settings: Settings, one_conn_pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    db = CallerSession(one_conn_pool, claims(alice))
    # Our SQLSTATEs become their AppErrors (AMNF2: no such deployment of yours).
    with pytest.raises(DeploymentNotFound):
        await db.run(SEND, {"id": uuid.uuid4()})

    # A connection lost while in use is DatabaseUnavailable. Terminated, and gone when
    # pg_terminate_backend returns (it waits up to 10 s for the backend to exit).
    async def lose_connection_in_use() -> None:
        async with db.transaction() as tx:
            conn.execute("select pg_terminate_backend(%s, 10000)", (tx.info.backend_pid,))
            await tx.execute(WHO)

    with pytest.raises(DatabaseUnavailable):
        await lose_connection_in_use()
    # One lost while idle in the pool is found when taken (the pool checks it) and replaced:
    # the next statement is answered (docs/operations.md#database-outages).
    async with one_conn_pool.connection() as pooled:
        pid = pooled.info.backend_pid
    assert conn.execute("select pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (True,)
    assert await db.run(WHO, {}) == [{"role": "authenticated", "uid": str(alice.user.id)}]
    # So is a pool with no connection to give.
    busy = AsyncConnectionPool(settings.api_url, min_size=1, max_size=1, timeout=0.2, open=False)
    await busy.open(wait=True)
    async with busy.connection():
        with pytest.raises(DatabaseUnavailable):
            await run_as_caller(busy, claims(alice), WHO, {})
    await busy.close()


async def test_run_a_failed_commit_is_database_unavailable(
    one_conn_pool: AsyncConnectionPool, alice: Caller, conn: psycopg.Connection
) -> None:
    # A deferred constraint trigger fails the transaction at its (implicit) COMMIT.
    conn.execute(
        "create function public.fail_at_commit() returns trigger language plpgsql as $$"
        " begin raise exception 'refused at commit' using errcode = '40001'; end $$;"
        " create constraint trigger fail_at_commit after insert on private.telemetry_events"
        " deferrable initially deferred for each row execute function public.fail_at_commit()"
    )
    db = CallerSession(one_conn_pool, claims(alice))
    with pytest.raises(DatabaseUnavailable):
        await db.run(
            "select private.track_event('marketplace.agent.viewed', null, null, '{}'::jsonb)", {}
        )
    assert stored(conn, alice) == 0


async def test_no_constraint_or_trigger_waits_for_the_commit(conn: psycopg.Connection) -> None:
    """`run_as_caller` counts on it: a commit then fails only with its connection (or as a
    transaction rollback), never with a constraint of ours (docs/architecture.md#sql)."""
    deferrable = conn.execute(
        "select conrelid::regclass::text, conname from pg_constraint c"
        " join pg_namespace n on n.oid = c.connamespace"
        " where n.nspname in ('public', 'private') and c.condeferrable"
        " union all select tgrelid::regclass::text, tgname from pg_trigger t"
        " join pg_class r on r.oid = t.tgrelid join pg_namespace n on n.oid = r.relnamespace"
        " where n.nspname in ('public', 'private') and t.tgdeferrable"
    ).fetchall()
    assert deferrable == []
