"""Database connections for operator tools (migrate, seed, token). The HTTP app has its own pool."""

from __future__ import annotations

import psycopg

from agentmarket.config import Settings


def connect(settings: Settings, *, direct: bool = True) -> psycopg.Connection:
    """An autocommit connection: callers open explicit transactions with `conn.transaction()`.

    `direct` picks DATABASE_DIRECT_URL (a session connection: migrations take advisory locks).
    """
    url = settings.direct_database_url if direct else settings.database_url.get_secret_value()
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, connect_timeout=10)
