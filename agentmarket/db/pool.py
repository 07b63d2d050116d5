"""Connections: `connect`, a synchronous autocommit connection for operator tools (migrate, seed,
token) over the operator's DATABASE_URL / DATABASE_DIRECT_URL; `create_pool`, the async pool of
the HTTP functions over their own login (API_DATABASE_URL, `agentmarket_api`); `create_worker_pool`,
the chat worker's over its login (WORKER_DATABASE_URL).

Both async pools are built to ride out a database outage (docs/operations.md#database-outages):
a connection is checked when it is taken (`check_taken`: a restart leaves every idle one broken;
a sound one costs no round trip), a caller waits
at most DB_UNAVAILABLE_TIMEOUT_SECONDS for one (`PoolTimeout`, an `OperationalError`), a new
connection gives up after as long, and a pool that lost its connections tries again at most
about 2 s apart however long the database was away (`RECONNECT_TIMEOUT`). `database_lost` says
whether an error means the database is gone (retry later) rather than a statement that is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import select
from typing import Any, Final

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.config import Settings

__all__ = [
    "RECONNECT_TIMEOUT",
    "check_taken",
    "connect",
    "connect_timeout",
    "connection_kwargs",
    "create_pool",
    "create_worker_pool",
    "database_lost",
    "refresh_soon",
]

log = structlog.get_logger("agentmarket.db")

# How long the pools' background attempt to replace a lost connection keeps trying (psycopg_pool's
# `reconnect_timeout`): after 1 s, after 2 s more, then it gives up and the next caller that finds
# no connection starts a new attempt, which connects at once when the database is back. So a
# database that comes back is found within about 2 s however long it was away. psycopg_pool's
# default (5 minutes of doubling delays) left the API answering 503 for 38 s after a 75 s outage
# had ended (docs/operations.md#database-outages).
RECONNECT_TIMEOUT: Final = 4.0


def connect(settings: Settings) -> psycopg.Connection:
    """An autocommit connection over DATABASE_DIRECT_URL (a session connection: migrations take
    advisory locks); callers open explicit transactions with `conn.transaction()`."""
    return psycopg.connect(
        settings.direct_database_url, autocommit=True, prepare_threshold=None, connect_timeout=10
    )


def connect_timeout(settings: Settings) -> int:
    """Whole seconds a connection attempt may take (see `connection_kwargs`)."""
    return max(10, math.ceil(2 * settings.db_unavailable_timeout_seconds))


def connection_kwargs(settings: Settings, application_name: str) -> dict[str, Any]:
    """Connection options for the processes' autocommit connections (pooled or LISTEN).

    `connect_timeout` bounds a connection attempt that hangs (a host that vanished): twice
    DB_UNAVAILABLE_TIMEOUT_SECONDS, at least 10 s, so a slow but working server (a loaded
    machine, a cold start) is not given up on; a request's own wait is the pool's `timeout`.
    TCP keepalives notice a peer that vanished without closing the connection (a LISTEN
    connection otherwise waits on it forever).
    """
    return {
        "autocommit": True,
        "prepare_threshold": None,
        "connect_timeout": connect_timeout(settings),
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }


async def check_taken(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pools' check of a connection as it is taken, without a round trip when it is sound.

    A pooled connection idles with nothing to read: a server that went away (a restart, a
    terminated backend, a crash) leaves its goodbye or an end-of-file on the socket. So the socket
    is polled first (one non-blocking `select`), and only a connection with something waiting
    gets the full check (`AsyncConnectionPool.check_connection`, an empty query), which raises
    for a broken one: the pool then discards it and takes or makes another. A peer that vanished
    without closing (a network partition) passes and fails its first statement (503), as it would
    have failed right after any check; TCP keepalives close it meanwhile."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        readable = [True]
    if readable:
        await AsyncConnectionPool.check_connection(conn)


def create_pool(
    settings: Settings, *, min_size: int = 4, max_size: int = 16
) -> AsyncConnectionPool:
    """The request pool on API_DATABASE_URL (not opened: call `await pool.open()`; nothing
    connects at import).

    `prepare_threshold=None` keeps it usable behind a transaction-mode pooler (Supavisor :6543).
    """
    return AsyncConnectionPool(
        settings.api_url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(settings, "agentmarket-api"),
        timeout=settings.db_unavailable_timeout_seconds,
        reconnect_timeout=RECONNECT_TIMEOUT,
        check=check_taken,
        open=False,
        name="agentmarket-requests",
    )


def create_worker_pool(settings: Settings, *, min_size: int, max_size: int) -> AsyncConnectionPool:
    """The chat worker's pool on WORKER_DATABASE_URL (not opened), a session connection: a
    lease-holding claim needs one."""
    return AsyncConnectionPool(
        settings.worker_url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(settings, "agentmarket-worker"),
        # No client waits on the worker: it may wait longer than a request for a connection
        # (a slow one is not an outage), still bounded.
        timeout=2 * settings.db_unavailable_timeout_seconds,
        reconnect_timeout=RECONNECT_TIMEOUT,
        check=check_taken,
        open=False,
        name="agentmarket-worker",
    )


def database_lost(exc: BaseException) -> bool:
    """Whether `exc` means the database went away or is not answering (a lost or refused
    connection, an administrator's shutdown, a pool timeout, a cancelled statement): always
    worth retrying later, never the caller's fault. Errors of the statement itself (our own
    SQLSTATEs, constraint violations, bad SQL) are not."""
    return isinstance(exc, psycopg.OperationalError)


_refreshing: set[asyncio.Task[None]] = set()


def refresh_soon(pool: AsyncConnectionPool) -> None:
    """Check every idle connection of `pool` in the background and replace the broken ones at
    once (`pool.check()`). Called when a LISTEN connection reconnects: the database is back, and
    connections that idled through the outage are broken; requests need not find that out one
    at a time. Needs a running event loop."""

    async def check() -> None:
        with contextlib.suppress(Exception):
            await pool.check()
        log.info("db.pool_checked", pool=pool.name)

    task = asyncio.get_running_loop().create_task(check(), name=f"check:{pool.name}")
    _refreshing.add(task)
    task.add_done_callback(_refreshing.discard)
