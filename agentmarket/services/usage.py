"""The caller's limits and where they stand (`GET /api/me/usage`): one round trip to
`private.my_usage()`, which reads the limits the database enforces and the caller's own counts
(docs/api.md#usage). Nothing is taken from any quota."""

from __future__ import annotations

from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.domain.models import UsageReport

__all__ = ["my_usage"]


async def my_usage(*, db: CallerSession) -> UsageReport:
    """The signed-in caller's chat quota, replies in flight, deployments, platform-key tokens
    today and this month's messages and tokens."""
    conn = await db.conn()
    cur = await conn.execute(query("usage_mine"))
    row = await cur.fetchone()
    assert row is not None  # a function call always yields one row
    return UsageReport.model_validate(row[0])
