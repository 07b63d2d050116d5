"""Riding out a database outage and shutting down, without a database: which errors mean the
database is lost, a worker job that loses it is handed back (never failed), the SSE stream's
`stream.closing`, the hub's shutdown notice, the stop-signal hook and the 503 for any lost
connection (docs/operations.md#database-outages, #graceful-shutdown)."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import FrameType

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg_pool import PoolTimeout
from structlog.testing import capture_logs

from agentmarket.core.config import Settings
from agentmarket.core.errors import DatabaseUnavailable
from agentmarket.db.pool import check_taken, create_pool, create_worker_pool, database_lost
from agentmarket.llm.client import Completed, Retrying, TextDelta, TokenUsage
from agentmarket.services.replies import ReplyEvent
from agentmarket.services.streams import Event, StreamHub, StreamState, follow
from functions import problems, shutdown
from functions.sse import ReplyStreamResponse
from tests.unit.workers.fakes import FakeModel, FakeStore, make_job
from tests.unit.workers.test_job import events, run, runner
from workers.chat_worker import ChatWorker
from workers.config import WorkerConfig
from workers.lease import JobSignals
from workers.store import Outcome
from workers.store import ReplyEvent as JobEvent

ID = uuid.uuid4()


def test_lost_connections_and_pool_timeouts_are_a_lost_database_and_bad_sql_is_not() -> None:
    assert database_lost(psycopg.OperationalError("server closed the connection"))
    assert database_lost(psycopg.errors.AdminShutdown())
    assert database_lost(psycopg.errors.CannotConnectNow())
    assert database_lost(PoolTimeout("couldn't get a connection after 5.00 sec"))
    assert not database_lost(psycopg.errors.UniqueViolation())
    assert not database_lost(psycopg.errors.RaiseException())
    assert not database_lost(RuntimeError("bug"))


def test_both_pools_check_connections_and_wait_at_most_the_outage_timeout() -> None:
    settings = Settings(db_unavailable_timeout_seconds=3)
    api, worker = create_pool(settings), create_worker_pool(settings, min_size=1, max_size=2)
    assert (api.timeout, worker.timeout) == (3, 6)  # a request waits at most the setting
    for pool in (api, worker):
        assert pool._check is check_taken  # checked when taken, a round trip only if unsound
        assert isinstance(pool.kwargs, dict)
        assert pool.kwargs["connect_timeout"] == 10
        assert pool.kwargs["keepalives"] == 1


# --- the worker ----------------------------------------------------------------------------------


@dataclass
class LosingStore(FakeStore):
    """A store whose finish (or reset) meets a lost database; release works or not."""

    fail_finish: bool = True
    fail_reset: bool = False
    release_works: bool = True

    async def finish(self, job_id: int, outcome: Outcome, event: JobEvent | None) -> bool:
        if self.fail_finish:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return await super().finish(job_id, outcome, event)

    async def reset(self, job_id: int) -> None:
        if self.fail_reset:
            raise PoolTimeout("couldn't get a connection after 5.00 sec")
        await super().reset(job_id)

    async def release(self, job_id: int) -> bool:
        if not self.release_works:
            raise PoolTimeout("couldn't get a connection after 5.00 sec")
        return await super().release(job_id)


USAGE = TokenUsage(prompt_tokens=1, completion_tokens=1)
DONE = Completed(model="gpt-agent", finish_reason="stop", usage=USAGE)


async def answer(store: FakeStore, *steps: object) -> list[object]:
    job = make_job()
    with capture_logs() as logs:
        await run(runner(store, FakeModel(*steps)), job, JobSignals())  # type: ignore[arg-type]
    return events(logs)


async def test_a_job_whose_finish_loses_the_database_is_handed_back_not_failed() -> None:
    store = LosingStore()

    logged = await answer(store, TextDelta("hello"), DONE)

    assert store.finished == []  # never internal_error
    assert store.released == [7]
    assert logged == ["job.database_lost", "job.released"]


async def test_a_job_that_cannot_hand_itself_back_leaves_its_lease_to_run_out() -> None:
    store = LosingStore(release_works=False)

    logged = await answer(store, TextDelta("hello"), DONE)

    assert store.finished == [] and store.released == []
    assert logged == ["job.database_lost", "job.release_failed"]


async def test_a_retried_model_call_whose_reset_loses_the_database_is_handed_back() -> None:
    store = LosingStore(fail_finish=False, fail_reset=True)

    logged = await answer(
        store, TextDelta("partial"), Retrying(attempt=2, delay=0.0, error_code="server_error"), DONE
    )

    assert store.finished == [] and store.released == [7]
    assert logged[-2:] == ["job.database_lost", "job.released"]


async def test_a_statement_error_that_is_not_a_lost_database_still_fails_the_reply() -> None:
    @dataclass
    class Broken(FakeStore):
        async def reset(self, job_id: int) -> None:
            raise psycopg.errors.RaiseException("not a final status")

    store = Broken()

    await answer(
        store, TextDelta("partial"), Retrying(attempt=2, delay=0.0, error_code="server_error"), DONE
    )

    [finished] = store.finished
    assert finished.outcome.error_code == "internal_error"


# --- streams -------------------------------------------------------------------------------------


async def test_a_shutting_down_hub_ends_every_follower_with_closing_and_new_ones_at_once() -> None:
    hub = StreamHub("postgresql://unused")
    before = hub.open(ID)

    async def read() -> StreamState:
        return StreamState("running", "abc", 0)

    hub.shutdown(retry_ms=1500)
    after = hub.open(uuid.uuid4())
    for subscription in (before, after):
        got = [e async for e in follow(subscription, read, ping_interval=5)]
        assert got == [
            Event("delta", id="0.3", text="abc"),
            Event("closing", text="shutdown", retry_ms=1500),
        ]
    assert hub.closing
    hub.shutdown()  # idempotent: no second notice
    assert before.queue.empty()


async def _body(response: ReplyStreamResponse) -> str:
    sent: list[bytes] = []

    async def receive() -> dict[str, object]:
        await asyncio.Event().wait()
        return {}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))  # type: ignore[arg-type]

    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET", "headers": []}
    await response(scope, receive, send)  # type: ignore[arg-type]
    return b"".join(sent).decode()


async def test_a_stream_whose_read_fails_ends_with_stream_closing_not_a_cut() -> None:
    async def replies() -> AsyncGenerator[ReplyEvent, None]:
        yield Event("delta", id="0.5", text="hello")
        raise DatabaseUnavailable()

    body = await _body(ReplyStreamResponse(ID, replies()))

    *_, last = [block for block in body.split("\n\n") if block]
    assert last.splitlines()[:2] == ["retry: 2000", "event: stream.closing"]
    assert "id:" not in last  # the client resumes from the last delta's id
    data = json.loads(last.splitlines()[2].removeprefix("data: "))
    assert data == {"reason": "database_unavailable", "retry_ms": 2000}


async def test_a_shutdown_closing_event_is_rendered_with_its_reason() -> None:
    async def replies() -> AsyncGenerator[ReplyEvent, None]:
        yield Event("closing", text="shutdown", retry_ms=1000)

    body = await _body(ReplyStreamResponse(ID, replies()))

    assert body == (
        'retry: 1000\nevent: stream.closing\ndata: {"reason":"shutdown","retry_ms":1000}\n\n'
    )


# --- the API -------------------------------------------------------------------------------------


async def test_the_stop_signal_reaches_the_app_first_then_the_servers_handler() -> None:
    calls: list[str] = []

    def server(signum: int, frame: FrameType | None) -> None:
        calls.append("server")

    previous = signal.signal(signal.SIGTERM, server)
    try:
        with shutdown.on_stop_signal(lambda: calls.append("app")):
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(0.01)  # the app's callback runs on the loop
        assert calls == ["server", "app"]  # the handler ran at once, the app's soon after
        assert signal.getsignal(signal.SIGTERM) is server  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_a_lost_connection_anywhere_is_a_503_problem_with_retry_after() -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise PoolTimeout("couldn't get a connection after 5.00 sec")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/boom")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "2"
    assert response.json()["code"] == "database_unavailable"


@pytest.mark.parametrize(
    ("failures", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]
)
def test_failed_claims_back_off_doubling_up_to_the_cap(failures: int, expected: float) -> None:
    worker = ChatWorker(Settings(), config=WorkerConfig(poll_interval=1.0, max_claim_backoff=5.0))
    worker._claim_failures = failures
    assert worker._claim_backoff() == expected
