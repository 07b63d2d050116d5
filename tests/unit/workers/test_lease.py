"""The lease keeper: extends the lease, and signals a lost lease or a cancelled reply."""

from __future__ import annotations

import asyncio

import psycopg

from tests.unit.workers.fakes import FakeStore, after
from workers.lease import JobSignals, LeaseKeeper, lease_interval
from workers.store import LeaseState

INTERVAL = 0.01


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 2)


def test_the_lease_is_extended_every_third_of_its_length() -> None:
    assert lease_interval(30) == 10
    assert lease_interval(1) == 0.5  # but not more often than twice a second


async def test_a_lost_lease_is_signalled_and_no_longer_extended() -> None:
    store = FakeStore(owned=False)
    signals = JobSignals()

    async with LeaseKeeper(store, 1, signals, interval=INTERVAL) as inside:
        assert inside is signals
        await wait_for(signals.lost)
        await asyncio.sleep(INTERVAL * 5)

    assert store.extensions == 1
    assert not signals.cancel.is_set()


async def test_a_cancel_request_is_signalled_and_the_lease_kept() -> None:
    reached, seen = after(3)
    store = FakeStore(cancel_requested=True, on_extend=seen)
    signals = JobSignals()

    async with LeaseKeeper(store, 1, signals, interval=INTERVAL):
        await wait_for(signals.cancel)
        await wait_for(reached)

    assert not signals.lost.is_set()


class Flaky:
    """Fails to extend twice (a database hiccup), then reports the lease lost."""

    def __init__(self) -> None:
        self.calls = 0

    async def extend_lease(self, job_id: int) -> LeaseState:
        self.calls += 1
        if self.calls <= 2:
            raise psycopg.OperationalError("connection lost")
        return LeaseState(owned=False, cancel_requested=False)


async def test_a_failed_extension_is_tried_again() -> None:
    store = Flaky()
    signals = JobSignals()

    async with LeaseKeeper(store, 1, signals, interval=INTERVAL):
        await wait_for(signals.lost)

    assert store.calls == 3


async def test_leaving_stops_the_keeper() -> None:
    reached, seen = after(2)
    store = FakeStore(on_extend=seen)
    signals = JobSignals()

    async with LeaseKeeper(store, 1, signals, interval=INTERVAL):
        await wait_for(reached)
    extended = store.extensions
    await asyncio.sleep(INTERVAL * 5)

    assert store.extensions == extended
    assert not signals.lost.is_set() and not signals.cancel.is_set()
