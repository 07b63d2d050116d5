"""Product events.

`track` records a product event (`marketplace.agent.deployed`, …) both as a log line and as a row
in private.telemetry_events, inside the caller's transaction; `EventSink` batches the high-volume
ones. Both insert with the one named query `telemetry_track_event`, and only events in `EVENTS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
import psycopg
import structlog
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from agentmarket.db.caller import CallerSession, set_caller
from agentmarket.db.queries import query

__all__ = ["EVENTS", "RATE_LIMITED_EVENT", "EventSink", "check_event", "event_row", "track"]

# A chat send refused by a limit (429); the admin metrics count these (`rate_limited`).
RATE_LIMITED_EVENT = "agent.chat.rate_limited"

EVENTS = frozenset(
    {
        "marketplace.agent.viewed",
        "marketplace.search.performed",
        "marketplace.agent.deployed",
        "agent.chat.message.sent",
        "agent.chat.response.received",
        "agent.chat.error",
        "marketplace.survey.submitted",
        RATE_LIMITED_EVENT,
    }
)


def check_event(name: str) -> str:
    """`name` if it is a known product event (`EVENTS`); ValueError otherwise. Every writer of
    private.telemetry_events checks here first (the worker writes its reply events itself)."""
    if name not in EVENTS:
        raise ValueError(f"unknown telemetry event {name!r}")
    return name


log = structlog.get_logger("agentmarket")


def event_row(
    name: str,
    agent_id: uuid.UUID | None,
    deployment_id: uuid.UUID | None,
    properties: dict[str, Any],
) -> dict[str, Any]:
    """The parameters of `telemetry_track_event`."""
    return {
        "name": name,
        "agent_id": agent_id,
        "deployment_id": deployment_id,
        "properties": Jsonb(properties),
    }


async def track(
    name: str,
    *,
    db: CallerSession,
    agent_id: uuid.UUID | None = None,
    deployment_id: uuid.UUID | None = None,
    **properties: Any,
) -> None:
    """Record a product event: a log line now, a telemetry row in the caller's request
    transaction (written when it commits)."""
    check_event(name)
    log.info(
        name,
        agent_id=str(agent_id) if agent_id else None,
        deployment_id=str(deployment_id) if deployment_id else None,
        **properties,
    )
    conn = await db.conn()
    await conn.execute(
        query("telemetry_track_event"), event_row(name, agent_id, deployment_id, properties)
    )


class EventSink:
    """High-volume events (views, searches) written in batches, off the request path.

    `record` only appends to a bounded in-memory buffer and logs the event; a background task
    writes the buffer every `interval` seconds in one transaction over the functions' pool. The
    API login may not write telemetry itself: each user's events go through `private.track_event`
    as that user (role authenticated and their `sub` in the claims, like their own requests), the
    anonymous ones as anon, so the database takes the user from the claims and stamps the time.
    A crash loses at most that interval's views; business facts (deployments) use `track` instead,
    inside their own transaction.
    """

    def __init__(
        self, pool: AsyncConnectionPool, *, interval: float = 1.0, max_pending: int = 10_000
    ) -> None:
        self.pool = pool
        self.interval = interval
        self.max_pending = max_pending
        self._pending: list[tuple[str | None, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def record(
        self,
        name: str,
        *,
        user_id: str | None,
        agent_id: uuid.UUID | None = None,
        deployment_id: uuid.UUID | None = None,
        **properties: Any,
    ) -> None:
        check_event(name)
        log.info(name, agent_id=str(agent_id) if agent_id else None, **properties)
        if len(self._pending) >= self.max_pending:
            self._pending.pop(0)
            self.dropped += 1
        event = {
            "name": name,
            "agent_id": agent_id,
            "deployment_id": deployment_id,
            "properties": properties,
        }
        self._pending.append((user_id, event))

    async def flush(self) -> int:
        """Write the buffer: one `private.track_events` statement per caller, the events as one
        JSON array (encoded here with orjson), all in one transaction."""
        batch, self._pending = self._pending, []
        if not batch:
            return 0
        by_user: dict[str | None, list[dict[str, Any]]] = {}
        for user_id, event in batch:
            by_user.setdefault(user_id, []).append(event)
        try:
            async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                for user_id, events in by_user.items():
                    claims = None if user_id is None else {"sub": user_id, "role": "authenticated"}
                    await cur.execute(set_caller(claims))
                    payload = orjson.dumps(events).decode()
                    await cur.execute(query("telemetry_track_events"), {"events": payload})
        except psycopg.Error:
            log.warning("telemetry.flush_failed", events=len(batch))
            self._pending = (batch + self._pending)[-self.max_pending :]
            return 0
        return len(batch)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="telemetry-flush")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
