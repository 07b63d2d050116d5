"""Keeping a job's lease while it runs (docs/architecture.md#queue-and-leases).

`LeaseKeeper` is an async context manager: inside it, a background task extends the job's lease
every third of its length. When the lease is no longer ours (another worker took the job over
after we stalled, or it was cancelled by a delete) it sets `signals.lost`; when the reply's owner
asked to stop it sets `signals.cancel`. A failed extension is tried again next round: the lease
has slack for two of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import psycopg

from workers.store import LeaseState

__all__ = ["JobSignals", "LeaseKeeper", "lease_interval"]


@dataclass
class JobSignals:
    """What a running job is told from outside: stop (cancelled), or it is no longer ours."""

    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class Extends(Protocol):
    async def extend_lease(self, job_id: int) -> LeaseState: ...


def lease_interval(lease_seconds: float) -> float:
    """How often a lease of `lease_seconds` is extended."""
    return max(lease_seconds / 3, 0.5)


class LeaseKeeper:
    def __init__(
        self, store: Extends, job_id: int, signals: JobSignals, *, interval: float
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.signals = signals
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> JobSignals:
        self._task = asyncio.create_task(self._keep(), name=f"lease-{self.job_id}")
        return self.signals

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                state = await self.store.extend_lease(self.job_id)
            except psycopg.Error:
                continue  # try again next round; the lease has slack
            if not state.owned:
                self.signals.lost.set()
                return
            if state.cancel_requested:
                self.signals.cancel.set()
