"""Limits this process enforces itself: open reply streams per user (MAX_OPEN_STREAMS_PER_USER).

The other limits live in the database (supabase/migrations/20261130120000_rate_limits.sql and
after), so they hold across instances. An open stream is a connection to *this* instance, so its
cap is per instance (docs/api.md#limits): `StreamSlots` counts each user's open streams here. A
slot is taken before anything is stored or read (a refused streaming send stores nothing) and
given back exactly once when the stream ends, fails, or is closed, also when it never started
(a client gone before the first byte): `held` wraps a stream so that closing it releases its slot.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any, Protocol, TypeVar

from agentmarket.core.errors import TooManyStreams
from agentmarket.db.sqlstate import quota_headers

__all__ = ["RETRY_AFTER_SECONDS", "HeldStream", "StreamSlot", "StreamSlots", "held"]

# No way to know when a stream will close: a short, honest hint.
RETRY_AFTER_SECONDS = 1

T = TypeVar("T")


class StreamSlot:
    """One open stream of one user; `release()` gives it back (once, however often called)."""

    def __init__(self, slots: StreamSlots, user_id: uuid.UUID) -> None:
        self._slots = slots
        self._user_id = user_id
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._user_id)

    def __enter__(self) -> StreamSlot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release on an error only: a slot handed on to a stream stays taken."""
        if exc_type is not None:
            self.release()


class StreamSlots:
    """Per-user counts of open streams on this instance, at most `per_user` each."""

    def __init__(self, per_user: int) -> None:
        if per_user < 1:
            raise ValueError("per_user must be at least 1")
        self.per_user = per_user
        self._open: Counter[uuid.UUID] = Counter()

    def open(self, user_id: uuid.UUID) -> int:
        """How many streams the user has open here."""
        return self._open[user_id]

    def acquire(self, user_id: uuid.UUID) -> StreamSlot:
        """A slot for one more stream, or `TooManyStreams` (429, Retry-After) at the cap."""
        if self._open[user_id] >= self.per_user:
            headers = quota_headers("streams", self.per_user, 0, 0, RETRY_AFTER_SECONDS)
            raise TooManyStreams(headers={"Retry-After": str(RETRY_AFTER_SECONDS), **headers})
        self._open[user_id] += 1
        return StreamSlot(self, user_id)

    def _release(self, user_id: uuid.UUID) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]


class Releasable(Protocol):
    """Something a stream holds until it ends (`release()` is idempotent)."""

    def release(self) -> None: ...


class HeldStream(AsyncGenerator[T, None]):
    """`events` holding `holds` (a stream slot, a subscription): they are released when the
    events end or fail, and by `aclose()` even if the events were never started (unlike a plain
    generator's `finally`)."""

    def __init__(self, events: AsyncGenerator[T, None], holds: tuple[Releasable, ...]) -> None:
        self._events = events
        self._holds = holds

    def _release(self) -> None:
        for hold in self._holds:
            hold.release()

    async def asend(self, value: None) -> T:
        try:
            return await self._events.asend(value)
        except BaseException:
            self._release()
            raise

    async def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> T:
        try:
            if val is None and tb is None:
                return await self._events.athrow(typ)
            return await self._events.athrow(typ, val, tb)
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._release()


def held(events: AsyncGenerator[T, None], *holds: Releasable) -> AsyncGenerator[T, None]:
    """`events` that give `holds` back when they end, fail or are closed."""
    return HeldStream(events, holds)
