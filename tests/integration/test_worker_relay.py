"""The worker on the real database: one relay statement per tick for many replies, and a loop that
claims only when a job may be waiting yet never leaves one waiting."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.config import get_settings
from agentmarket.llm.client import Completed, CompletionRequest, StreamEvent, TextDelta
from agentmarket.llm.hold import StreamHold
from tests.integration.test_queue import make_jobs
from workers.chat_worker import ChatWorker
from workers.config import WorkerConfig
from workers.relay import Flusher
from workers.store import Claim, JobStore, Piece

pytestmark = pytest.mark.db


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    settings = get_settings(app_env="test", database_url=db_url)
    async with AsyncConnectionPool(
        settings.worker_url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
    ) as opened:
        yield opened


class CountingStore(JobStore):
    """The real store, counting its relay statements."""

    statements = 0

    async def append_batch(self, pieces: Sequence[Piece]) -> dict[int, int | None]:
        self.statements += 1
        return await super().append_batch(pieces)


async def test_n_replies_streaming_at_once_cost_one_statement_per_tick(
    db_url: str, conn: psycopg.Connection, pool: AsyncConnectionPool
) -> None:
    replies, rounds = 20, 15
    make_jobs(conn, replies)
    store = CountingStore(pool, worker_id="w-relay", lease_seconds=30)
    jobs = (await store.claim(replies)).jobs
    assert len(jobs) == replies
    flusher = Flusher(
        store,
        first_flush_delay=0.001,
        flush_interval=0.005,
        flush_interval_per_reply=0.0001,
        max_flush_interval=0.01,
        flush_chars=1500,
    )
    relays = [flusher.relay(job.id, lambda: asyncio.sleep(0), started=0.0) for job in jobs]
    listener = psycopg.connect(db_url, autocommit=True)
    listener.execute("listen agentmarket_chat_stream")
    try:
        for i in range(rounds):
            for relay in relays:
                relay.add(f"{i} ")
            await asyncio.sleep(0.01)
        await until(lambda: all(relay.written == relay.length for relay in relays))
        notices = [json.loads(n.payload) for n in listener.notifies(timeout=0.5)]
    finally:
        for relay in relays:
            relay.close()
        await flusher.aclose()
        listener.close()

    expected = "".join(f"{i} " for i in range(rounds))
    stored = conn.execute(
        "select m.content from private.chat_jobs j join public.agent_messages m"
        " on m.id = j.message_id where j.id = any(%s)",
        ([job.id for job in jobs],),
    ).fetchall()
    assert stored == [(expected,)] * replies
    # One statement per tick for all the replies (at most one per round of text), not one per
    # reply per tick (300).
    assert 1 <= store.statements <= rounds
    # Every reply's notifications put together are its text: no gap, no repeat.
    message = str(jobs[0].message_id)
    pieces = sorted((n["o"], n["d"]) for n in notices if n["m"] == message)
    offset = 0
    for start, text in pieces:
        assert start == offset
        offset += len(text)
    assert "".join(text for _, text in pieces) == expected


class Model:
    """A model that answers every request at once."""

    async def stream(
        self, request: CompletionRequest, *, hold: StreamHold | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        yield TextDelta("Hello")
        yield TextDelta(" there")
        yield Completed(None, model="m", finish_reason="stop")

    async def aclose(self) -> None:
        return None


def enqueue(conn: psycopg.Connection) -> uuid.UUID:
    """A new queued reply, announced like a send announces it."""
    [job] = make_jobs(conn, 1)
    conn.execute("select pg_notify('agentmarket_chat_jobs', %s)", (str(job),))
    row = conn.execute("select message_id from private.chat_jobs where id = %s", (job,)).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


async def until(check: Callable[[], bool], seconds: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_job_queued_after_an_empty_claim_wakes_the_worker_and_its_end_claims_nothing(
    db_url: str, conn: psycopg.Connection
) -> None:
    settings = get_settings(app_env="test", database_url=db_url)
    # No poll in this test: only a notification (or the listener's first connect) makes it claim.
    config = WorkerConfig(concurrency=4, poll_interval=3600, queue_depth_interval=3600)
    worker = ChatWorker(settings, config=config, llm=Model())  # type: ignore[arg-type]
    claimed: list[int] = []
    replies: list[uuid.UUID] = []
    real_claim = worker.store.claim

    async def claim(limit: int, *, running: Sequence[int] = ()) -> Claim:
        result = await real_claim(limit, running=running)
        claimed.append(len(result.jobs))
        if not result.jobs and not replies and worker.listener.connected.is_set():
            # Between this claim finding nothing and the loop going to sleep.
            replies.append(enqueue(conn))
        return result

    worker.store.claim = claim  # type: ignore[method-assign]
    running = asyncio.create_task(worker.run())
    try:

        def done() -> bool:
            if not replies:
                return False
            row = conn.execute(
                "select status from public.agent_messages where id = %s", (replies[0],)
            ).fetchone()
            return row == ("completed",) and not worker.running

        await until(done)
        await asyncio.sleep(0.2)  # the loop has looked again since the job ended
    finally:
        worker.stop()
        await running

    content = conn.execute(
        "select content from public.agent_messages where id = %s", (replies[0],)
    ).fetchone()
    assert content == ("Hello there",)
    # Empty claims until the listener was up, then the claim the notification caused, which took
    # the job: fewer than it asked for, so the job's end claimed nothing more.
    assert claimed[-1] == 1 and set(claimed[:-1]) == {0}
    assert len(claimed) <= 3
    # A short reply is done before the relay's first tick: no append statement at all.
    assert worker.flusher.statements == 0


async def test_a_full_claim_with_more_waiting_claims_again_when_a_job_ends(
    db_url: str, conn: psycopg.Connection
) -> None:
    settings = get_settings(app_env="test", database_url=db_url)
    config = WorkerConfig(concurrency=1, poll_interval=3600, queue_depth_interval=3600)
    worker = ChatWorker(settings, config=config, llm=Model())  # type: ignore[arg-type]
    jobs = make_jobs(conn, 3)  # no notification: the start claims them, one at a time
    running = asyncio.create_task(worker.run())
    try:

        def all_done() -> bool:
            rows = conn.execute(
                "select count(*) from private.chat_jobs"
                " where id = any(%s) and status = 'completed'",
                (jobs,),
            ).fetchone()
            return rows == (3,)

        await until(all_done)
    finally:
        worker.stop()
        await running
