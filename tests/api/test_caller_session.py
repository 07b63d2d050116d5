"""CallerSession, the one connection style of the services: the request transaction opens on
first use and commits on close (rolls back when the request failed); `commit()` ends it early
(before waiting on a model) and `transaction()` runs a separate short transaction as the same
caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.config import Settings
from agentmarket.db.caller import CallerSession
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
