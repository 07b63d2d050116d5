"""Database access.

* `connect`: a synchronous autocommit connection for operator tools (migrate, seed, token).
* `create_pool` + `as_caller`: the async pool of the HTTP functions and the one-transaction-per-
  request pattern. Each request's SQL runs in a transaction that assumes the caller's role and JWT
  claims exactly as PostgREST does, so the same RLS policies protect both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from agentmarket.config import Settings
from agentmarket.errors import DatabaseUnavailable

ANON_CLAIMS: dict[str, Any] = {"role": "anon"}


def connect(settings: Settings, *, direct: bool = True) -> psycopg.Connection:
    """An autocommit connection: callers open explicit transactions with `conn.transaction()`.

    `direct` picks DATABASE_DIRECT_URL (a session connection: migrations take advisory locks).
    """
    url = settings.direct_database_url if direct else settings.database_url.get_secret_value()
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=10)


def create_pool(
    settings: Settings, *, min_size: int = 2, max_size: int = 10
) -> AsyncConnectionPool:
    """The request pool (not opened: call `await pool.open()`; nothing connects at import).

    `prepare_threshold=None` keeps it usable behind a transaction-mode pooler (Supavisor :6543).
    """
    return AsyncConnectionPool(
        settings.database_url.get_secret_value(),
        min_size=min_size,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": None, "connect_timeout": 10},
        timeout=10,
        open=False,
        name="agentmarket-requests",
    )


@asynccontextmanager
async def as_caller(
    pool: AsyncConnectionPool, claims: dict[str, Any] | None
) -> AsyncIterator[psycopg.AsyncConnection]:
    """One transaction as the caller: role and `request.jwt.claims` set locally, like PostgREST.

    `claims` None means an anonymous caller (role anon). The settings end with the transaction, so
    a pooled connection never carries one caller's identity into the next request.
    """
    role = "anon" if claims is None else str(claims.get("role", "authenticated"))
    if role not in ("anon", "authenticated"):
        raise ValueError(f"unexpected role {role!r}")
    try:
        async with pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps(claims if claims is not None else ANON_CLAIMS)),
            )
            yield conn
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise DatabaseUnavailable() from exc
