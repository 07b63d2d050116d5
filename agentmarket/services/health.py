"""Readiness: the database answers and has every migration this build ships."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from agentmarket.db.queries import query

__all__ = ["POOL_WAIT_SECONDS", "Readiness", "readiness"]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    report: dict[str, Any] = field(default_factory=dict)


# A probe answers quickly or not at all: waiting longer for a pooled connection helps nobody.
POOL_WAIT_SECONDS = 2.0


async def readiness(*, pool: AsyncConnectionPool, versions: Sequence[str]) -> Readiness:
    """Ready when the database answers and has applied every migration version this build ships."""
    try:
        # As the API login itself (outside any caller's transaction): it may read the applied
        # versions through this one definer function, and nothing else.
        async with pool.connection(timeout=POOL_WAIT_SECONDS) as conn:
            cur = await conn.execute(query("health_applied_migrations"))
            applied = {version for (version,) in await cur.fetchall()}
    except Exception:
        return Readiness(False, {"status": "unavailable", "database": "unreachable"})
    # Versions the database has and this build lacks are fine (a newer instance migrated during
    # a rolling deploy); files this build has that the database lacks are not.
    behind = [version for version in versions if version not in applied]
    if behind:
        return Readiness(
            False, {"status": "unavailable", "database": "ok", "migrations_not_applied": behind}
        )
    known = applied | set(versions)
    return Readiness(True, {"status": "ok", "database": "ok", "migrations": len(known)})
