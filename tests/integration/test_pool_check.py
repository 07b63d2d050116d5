"""`check_taken`, the pools' check of a connection as it is taken: a sound connection costs no
round trip; one whose server went away is found and refused (so the pool replaces it)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from agentmarket.db.pool import check_taken

pytestmark = pytest.mark.db


@pytest.fixture
def full_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the full checks (an empty query each) that `check_taken` falls back to."""
    calls: list[int] = []
    original = AsyncConnectionPool.check_connection

    async def counted(conn: psycopg.AsyncConnection) -> None:
        calls.append(1)
        await original(conn)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(counted))
    return calls


async def test_a_sound_connection_passes_without_a_round_trip(
    db_url: str, full_checks: list[int]
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        await aconn.execute("select 1")
        for _ in range(3):
            await check_taken(aconn)
        assert full_checks == []
        await aconn.execute("select 1")  # still usable


async def test_a_connection_whose_backend_was_terminated_is_refused(
    db_url: str, conn: psycopg.Connection, full_checks: list[int]
) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
        assert conn.execute(
            "select pg_terminate_backend(%s, 10000)", (aconn.info.backend_pid,)
        ).fetchone() == (True,)
        # pg_terminate_backend waited for the backend to exit: its goodbye is on the socket.
        with pytest.raises(psycopg.OperationalError):
            await check_taken(aconn)
        assert full_checks  # the socket had something to read: the full check ran and failed


async def test_a_closed_connection_is_refused(db_url: str) -> None:
    aconn = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await aconn.close()
    with pytest.raises(psycopg.OperationalError):
        await check_taken(aconn)
