"""Connections: `connect`, a synchronous autocommit connection for operator tools (migrate, seed,
token) over the operator's DATABASE_URL / DATABASE_DIRECT_URL; `create_pool`, the async pool of
the HTTP functions over their own login (API_DATABASE_URL, `agentmarket_api`)."""

from __future__ import annotations

import psycopg
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.config import Settings

__all__ = ["connect", "create_pool"]


def connect(settings: Settings) -> psycopg.Connection:
    """An autocommit connection over DATABASE_DIRECT_URL (a session connection: migrations take
    advisory locks); callers open explicit transactions with `conn.transaction()`."""
    return psycopg.connect(
        settings.direct_database_url, autocommit=True, prepare_threshold=None, connect_timeout=10
    )


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
        kwargs={
            "autocommit": True,
            "prepare_threshold": None,
            "connect_timeout": 10,
            "application_name": "agentmarket-api",
        },
        timeout=10,
        open=False,
        name="agentmarket-requests",
    )
