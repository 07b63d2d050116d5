"""The worker loop: a claim is one statement and says whether more jobs wait; the queue depth is
sampled on a timer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from prometheus_client import REGISTRY

from agentmarket.core.config import get_settings
from tests.unit.workers.fakes import make_job
from workers.chat_worker import ChatWorker
from workers.config import WorkerConfig
from workers.lease import JobSignals
from workers.store import Claim, Job, QueueSample


class CountingStore:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.claims = 0
        self.depth_reads = 0
        self.folds = 0

    async def claim(self, limit: int, *, running: Sequence[int] = ()) -> Claim:
        self.claims += 1
        return Claim([], more=False)

    async def queue_sample(self) -> QueueSample:
        self.depth_reads += 1
        return QueueSample(self.depth, 12.5)

    async def activity_sample(self, active_minutes: int) -> tuple[int, int]:
        assert active_minutes == 15
        return 3, 5

    async def fold_analytics(self) -> int:
        self.folds += 1
        return 0


def worker(interval: float) -> tuple[ChatWorker, CountingStore]:
    chat_worker = ChatWorker(
        get_settings(app_env="test"), config=WorkerConfig(queue_depth_interval=interval)
    )
    store = CountingStore(depth=7)
    chat_worker.store = store  # type: ignore[assignment]
    return chat_worker, store


async def test_claims_do_not_count_the_queue() -> None:
    chat_worker, store = worker(interval=60)
    for _ in range(5):
        await chat_worker._claim(3)
    assert (store.claims, store.depth_reads) == (5, 0)


async def test_only_a_full_claim_with_more_waiting_or_a_notification_claims_again() -> None:
    chat_worker, store = worker(interval=60)

    await chat_worker._claim(3)
    assert chat_worker._maybe_more is False  # found nothing: a job ending claims nothing

    async def full(limit: int, *, running: Sequence[int] = ()) -> Claim:
        return Claim([], more=True)

    store.claim = full  # type: ignore[method-assign]
    await chat_worker._claim(3)
    assert chat_worker._maybe_more is True

    store.claim = CountingStore(0).claim
    await chat_worker._claim(3)
    assert chat_worker._maybe_more is False
    chat_worker._notified("agentmarket_chat_jobs", "42")
    assert chat_worker._maybe_more is True and chat_worker._wake.is_set()


async def test_a_notification_during_a_claim_is_not_lost() -> None:
    chat_worker, _ = worker(interval=60)

    async def notified_meanwhile(limit: int, *, running: Sequence[int] = ()) -> Claim:
        chat_worker._notified("agentmarket_chat_jobs", "43")
        return Claim([], more=False)

    chat_worker.store.claim = notified_meanwhile  # type: ignore[method-assign]
    await chat_worker._claim(3)

    assert chat_worker._maybe_more is True


async def test_the_queue_depth_is_sampled_on_a_timer() -> None:
    chat_worker, store = worker(interval=0.02)
    sampler = asyncio.create_task(chat_worker._sample_queue_depth())
    await asyncio.sleep(0.11)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    assert 3 <= store.depth_reads <= 7
    assert store.folds == store.depth_reads  # the admin metrics' changes folded on the same timer
    assert REGISTRY.get_sample_value("agent_chat_queue_depth") == 7
    assert REGISTRY.get_sample_value("agent_chat_queue_oldest_seconds") == 12.5
    # The marketplace gauges are sampled with them, on the same timer.
    assert REGISTRY.get_sample_value("marketplace_agents_active") == 3
    assert REGISTRY.get_sample_value("marketplace_conversations_active") == 5


async def test_a_job_claimed_again_after_its_lease_lapsed_stops_the_stale_attempt() -> None:
    chat_worker, _ = worker(interval=60)
    job = make_job()
    release = asyncio.Event()

    async def run(job: Job, signals: JobSignals) -> None:
        await release.wait()

    chat_worker.runner.run = run  # type: ignore[method-assign]

    async def claimed(limit: int, *, running: Sequence[int] = ()) -> Claim:
        return Claim([job], more=False)

    chat_worker.store.claim = claimed  # type: ignore[method-assign]
    await chat_worker._claim(1)
    stale = chat_worker.running[job.id]
    await chat_worker._claim(1)  # our own lease lapsed: the same job again, a new attempt

    fresh = chat_worker.running[job.id]
    assert fresh is not stale
    assert stale.signals.lost.is_set() and not fresh.signals.lost.is_set()
    release.set()
    await asyncio.gather(*(r.task for r in (stale, fresh) if r.task is not None))
    assert chat_worker.running == {}


async def test_the_claim_is_told_which_jobs_run_here() -> None:
    """So a stalled worker's own claim never takes over a job it is still answering."""
    chat_worker, _ = worker(interval=60)
    first, second = make_job(id=7), make_job(id=8)
    release = asyncio.Event()

    async def run(job: Job, signals: JobSignals) -> None:
        await release.wait()

    chat_worker.runner.run = run  # type: ignore[method-assign]
    seen: list[list[int]] = []
    batches = [[first], [second], []]

    async def claimed(limit: int, *, running: Sequence[int] = ()) -> Claim:
        seen.append(sorted(running))
        return Claim(batches.pop(0), more=False)

    chat_worker.store.claim = claimed  # type: ignore[method-assign]
    await chat_worker._claim(4)
    await chat_worker._claim(4)
    await chat_worker._claim(4)
    assert seen == [[], [first.id], sorted([first.id, second.id])]
    release.set()
    await asyncio.gather(*(r.task for r in chat_worker.running.values() if r.task is not None))
