"""The worker loop: a claim is one statement; the queue depth is sampled on a timer."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import REGISTRY

from agentmarket.core.config import get_settings
from workers.chat_worker import ChatWorker
from workers.config import WorkerConfig
from workers.store import Job


class CountingStore:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.claims = 0
        self.depth_reads = 0

    async def claim(self, limit: int) -> list[Job]:
        self.claims += 1
        return []

    async def queue_depth(self) -> int:
        self.depth_reads += 1
        return self.depth


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


async def test_the_queue_depth_is_sampled_on_a_timer() -> None:
    chat_worker, store = worker(interval=0.02)
    sampler = asyncio.create_task(chat_worker._sample_queue_depth())
    await asyncio.sleep(0.11)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    assert 3 <= store.depth_reads <= 7
    assert REGISTRY.get_sample_value("agent_chat_queue_depth") == 7
