"""One job from claim to finish, with a fake store and a fake model: completed, cancelled, failed,
refused, lease lost, crashed and handed back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from agentmarket.llm.client import (
    Completed,
    CompletionRequest,
    FallingBack,
    LLMError,
    Retrying,
    StreamEvent,
    TextDelta,
    TokenUsage,
)
from agentmarket.llm.hold import StreamHold
from tests.unit.workers.fakes import (
    BOX,
    FakeModel,
    FakeStore,
    Step,
    forever,
    make_context,
    make_job,
    make_loaded,
    sealed_key,
)
from workers.config import WorkerConfig
from workers.context import ModelDefaults
from workers.job import JobRunner, Model
from workers.lease import JobSignals
from workers.relay import MAX_REPLY_CHARS
from workers.store import Job, ReplyEvent

USAGE = TokenUsage(prompt_tokens=12, completion_tokens=3)


def runner(store: FakeStore, model: Model, **config: float) -> JobRunner:
    return JobRunner(
        store,
        model,
        BOX,
        config=WorkerConfig(worker_id="w-test", **config),  # type: ignore[arg-type]
        defaults=ModelDefaults(model="gpt-platform", max_tokens=1000),
    )


async def answer(
    store: FakeStore, *steps: Step, signals: JobSignals | None = None, **config: float
) -> list[MutableMapping[str, Any]]:
    """Run one job; its log lines."""
    with capture_logs() as logs:
        await run(runner(store, FakeModel(*steps), **config), make_job(), signals or JobSignals())
    return logs


async def run(job_runner: JobRunner, job: Job, signals: JobSignals) -> None:
    """In a task of its own, like the loop runs it (its log context stays there)."""
    await asyncio.create_task(job_runner.run(job, signals))


def events(logs: list[MutableMapping[str, Any]]) -> list[object]:
    return [entry["event"] for entry in logs]


async def test_a_completed_reply_is_relayed_and_finished_with_its_event() -> None:
    store = FakeStore()
    model = FakeModel(
        TextDelta("Hel"),
        TextDelta("lo"),
        Completed(USAGE, model="gpt-x-2024", finish_reason="stop"),
    )
    job = make_job(attempts=2)

    with capture_logs() as logs:
        await run(runner(store, model), job, JobSignals())

    assert store.batches == []  # done before the first tick: the finish carries the text
    [finished] = store.finished
    outcome = finished.outcome
    assert (outcome.status, outcome.content, outcome.model) == ("completed", "Hello", "gpt-x-2024")
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (12, 3)
    assert outcome.ttft_ms is not None and outcome.latency_ms >= outcome.ttft_ms
    assert outcome.truncated is False and outcome.error_code is None
    event = finished.event
    assert event is not None and event.name == "agent.chat.response.received"
    context = store.loaded.context if store.loaded else None
    assert context is not None and event.user_id == context.user_id
    assert event.properties["message_id"] == str(job.message_id)
    assert event.properties["attempt"] == 2
    assert event.properties["status"] == "completed"
    assert model.requests[0].model == "gpt-agent"
    assert model.closed
    assert store.questions == [None]  # a chat agent: no knowledge-base search
    assert events(logs) == ["job.finished"]


async def test_a_reply_cut_by_the_models_token_limit_is_truncated() -> None:
    store = FakeStore()

    await answer(store, TextDelta("a"), Completed(None, model="", finish_reason="length"))

    outcome = store.finished[0].outcome
    assert outcome.truncated is True
    assert outcome.model == "gpt-agent"  # the provider named none: the one asked for
    assert outcome.prompt_tokens is None


async def test_a_reply_past_the_stored_limit_is_cut_and_the_model_no_longer_read() -> None:
    store = FakeStore()
    model = FakeModel(TextDelta("x" * (MAX_REPLY_CHARS - 1)), TextDelta("yz"), TextDelta("never"))

    with capture_logs():
        await run(runner(store, model), make_job(), JobSignals())

    outcome = store.finished[0].outcome
    assert outcome.truncated is True
    assert outcome.content == "x" * (MAX_REPLY_CHARS - 1) + "y"
    assert model.closed


def test_reply_events_pass_the_telemetry_allow_list() -> None:
    ids = (uuid.uuid4(), uuid.uuid4(), uuid.uuid4())

    assert ReplyEvent("agent.chat.error", *ids).name == "agent.chat.error"
    with pytest.raises(ValueError, match="unknown telemetry event"):
        ReplyEvent("agent.chat.secret_leaked", *ids)


async def test_a_retried_model_call_starts_the_reply_over() -> None:
    store = FakeStore()

    await answer(
        store,
        TextDelta("broken"),
        Retrying(attempt=2, delay=0.0, error_code="upstream_unavailable"),
        TextDelta("whole"),
        Completed(USAGE, model="m", finish_reason="stop"),
    )

    assert store.resets == 1
    assert store.finished[0].outcome.content == "whole"


async def test_a_reply_cancelled_mid_stream_keeps_the_text_so_far() -> None:
    store = FakeStore()
    signals = JobSignals()

    async def cancel() -> None:
        signals.cancel.set()

    model = FakeModel(
        TextDelta("partial"), cancel, TextDelta(" never"), Completed(USAGE, "m", None)
    )
    with capture_logs():
        await run(runner(store, model), make_job(), signals)

    [finished] = store.finished
    assert finished.outcome.status == "cancelled"
    assert finished.outcome.content == "partial"
    assert finished.event is not None and finished.event.properties["status"] == "cancelled"
    assert model.closed  # the model's response is released at once


async def test_a_model_failure_fails_the_reply_with_its_error_event() -> None:
    store = FakeStore()
    failure = LLMError(
        "upstream_unavailable", "The model is unavailable.", transient=True, attempts=3
    )

    logs = await answer(store, TextDelta("par"), failure)

    [finished] = store.finished
    outcome = finished.outcome
    assert (outcome.status, outcome.error_code) == ("failed", "upstream_unavailable")
    assert outcome.error_message == "The model is unavailable."
    assert outcome.content is None  # the stored text stays as relayed
    event = finished.event
    assert event is not None and event.name == "agent.chat.error"
    assert event.properties["error_type"] == "upstream_unavailable"
    assert event.properties["model_attempts"] == 3
    assert events(logs) == ["job.failed"]


async def test_a_lost_lease_mid_stream_writes_nothing_more() -> None:
    store = FakeStore()
    signals = JobSignals()

    async def lose() -> None:
        signals.lost.set()

    logs = await answer(store, TextDelta("a"), lose, TextDelta("b"), signals=signals)

    assert store.stored == ""
    assert store.finished == []
    assert events(logs) == ["job.lease_lost"]


async def test_the_lease_keeper_notices_a_lost_lease() -> None:
    store = FakeStore()

    async def stall() -> None:
        store.owned = False  # another worker took the job over
        await asyncio.sleep(0.7)  # past the keeper's first round (lease 1 s: every 0.5 s)

    logs = await answer(store, TextDelta("a"), stall, TextDelta("b"), lease_seconds=1)

    assert store.extensions == 1
    assert store.finished == []
    assert events(logs) == ["job.lease_lost"]


async def test_a_lost_lease_at_a_write_or_at_the_finish_writes_nothing() -> None:
    store = FakeStore(owned=False)
    logs = await answer(store, TextDelta("a"))
    assert store.finished == [] and events(logs) == ["job.lease_lost"]

    store = FakeStore(owned=False)
    written = asyncio.Event()

    async def wrote(delta: str) -> None:
        written.set()

    async def after_the_write() -> None:
        await written.wait()  # the relay's first tick found the lease lost

    store.on_append = wrote
    logs = await answer(
        store, TextDelta("a"), after_the_write, TextDelta("b"), Completed(None, "m", "stop")
    )
    assert store.finished == [] and events(logs) == ["job.lease_lost"]


async def test_text_still_streaming_at_a_tick_is_appended_and_the_finish_carries_the_rest() -> None:
    store = FakeStore()
    written = asyncio.Event()

    async def wrote(delta: str) -> None:
        written.set()

    store.on_append = wrote

    async def after_the_write() -> None:
        await written.wait()

    await answer(
        store,
        TextDelta("Hel"),
        after_the_write,
        TextDelta("lo"),
        Completed(USAGE, model="m", finish_reason="stop"),
    )

    assert [[(p.offset, p.text) for p in batch] for batch in store.batches] == [[(0, "Hel")]]
    assert store.finished[0].outcome.content == "Hello"


async def test_a_deleted_conversation_is_dropped() -> None:
    store = FakeStore(loaded=None)
    model = FakeModel(TextDelta("a"))

    with capture_logs() as logs:
        await run(runner(store, model), make_job(), JobSignals())

    assert model.requests == []
    assert store.finished == []
    assert events(logs) == ["job.lease_lost"]


async def test_a_deleted_deployment_cancels_the_reply_without_an_event() -> None:
    store = FakeStore(loaded=make_loaded(make_context(deleted_at=datetime.now(UTC))))
    model = FakeModel(TextDelta("a"))

    with capture_logs() as logs:
        await run(runner(store, model), make_job(), JobSignals())

    assert model.requests == []
    [finished] = store.finished
    assert (finished.outcome.status, finished.outcome.error_code) == (
        "cancelled",
        "deployment_deleted",
    )
    assert finished.event is None
    assert events(logs) == ["job.cancelled"]


async def test_a_missing_required_key_fails_the_reply_with_an_event() -> None:
    store = FakeStore(loaded=make_loaded(make_context(requires_user_key=True)))

    logs = await answer(store, TextDelta("a"))

    [finished] = store.finished
    assert (finished.outcome.status, finished.outcome.error_code) == ("failed", "missing_api_key")
    assert finished.event is not None and finished.event.name == "agent.chat.error"
    assert finished.event.properties["model_attempts"] is None
    assert events(logs) == ["job.failed"]


async def test_a_crash_fails_the_reply_as_an_internal_error() -> None:
    store = FakeStore()

    logs = await answer(store, TextDelta("a"), RuntimeError("bug"))

    [finished] = store.finished
    assert (finished.outcome.status, finished.outcome.error_code) == ("failed", "internal_error")
    # Every failure has its event: the context is the claim's, not the crashed code's.
    event = finished.event
    assert event is not None and event.name == "agent.chat.error"
    assert event.properties["error_type"] == "internal_error"
    assert event.properties["error_message"] == finished.outcome.error_message
    assert store.loaded is not None and event.user_id == store.loaded.context.user_id
    assert events(logs) == ["job.crashed", "job.failed"]


async def test_a_reply_answered_by_the_fallback_starts_over_and_names_its_model() -> None:
    store = FakeStore()

    logs = await answer(
        store,
        TextDelta("half of the primary"),
        FallingBack(model="gpt-fallback", error_code="upstream_unavailable"),
        TextDelta("the fallback's reply"),
        Completed(USAGE, model="gpt-fallback-2024", finish_reason="stop"),
    )

    assert store.resets == 1  # followers get message.reset, then the fallback's text
    [finished] = store.finished
    assert finished.outcome.status == "completed"
    assert finished.outcome.content == "the fallback's reply"
    assert finished.outcome.model == "gpt-fallback-2024"
    assert finished.event is not None and finished.event.properties["fallback"] is True
    [line] = [line for line in logs if line["event"] == "job.finished"]
    assert line["fallback"] is True


async def test_error_events_carry_a_scrubbed_message() -> None:
    store = FakeStore()
    leaky = "The provider said: bad key sk-proj-abcdefghijklmnopqrstuvwxyz012345"
    await answer(store, LLMError("upstream_bad_request", leaky, transient=False, attempts=1))
    [finished] = store.finished
    assert finished.event is not None
    message = finished.event.properties["error_message"]
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz012345" not in message
    assert message.startswith("The provider said: bad key")


@pytest.mark.parametrize("own_key", [True, False])
async def test_a_refused_key_moves_only_a_deployment_with_its_own_key_to_error(
    own_key: bool,
) -> None:
    context = make_context()
    secrets = [sealed_key(context)] if own_key else []
    store = FakeStore(loaded=make_loaded(context, secrets=secrets))
    refused = LLMError(
        "invalid_api_key",
        "The API key was rejected.",
        transient=False,
        attempts=1,
        status=401,
        account_refused=True,
    )

    await answer(store, refused)

    [finished] = store.finished
    assert finished.outcome.error_code == "invalid_api_key"
    if own_key:
        assert finished.outcome.deployment_error == "invalid_api_key: The API key was rejected."
        # ... naming the refused key as stored, so a key saved during the call is left alone
        assert finished.outcome.deployment_key == secrets[0].ciphertext
    else:  # the platform's key: the operator's problem, not the deployment's
        assert finished.outcome.deployment_error is None
        assert finished.outcome.deployment_key is None


async def test_a_transient_failure_leaves_the_deployment_alone() -> None:
    context = make_context()
    store = FakeStore(loaded=make_loaded(context, secrets=[sealed_key(context)]))
    await answer(store, LLMError("upstream_unavailable", "down", transient=True, attempts=4))
    assert store.finished[0].outcome.deployment_error is None
    assert store.finished[0].outcome.deployment_key is None


async def test_a_job_cancelled_from_outside_is_handed_back() -> None:
    store = FakeStore()
    job = make_job()
    waiting = asyncio.Event()

    async def park() -> None:
        waiting.set()
        await forever()

    model = FakeModel(TextDelta("a"), park)
    task = asyncio.create_task(runner(store, model).run(job, JobSignals()))
    await asyncio.wait_for(waiting.wait(), 2)

    with capture_logs() as logs:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert store.released == [job.id]
    assert store.finished == []
    assert events(logs) == ["job.released"]


class FakeConnection:
    """The model's connection, as the event loop reads it: every packet that arrives while it is
    read costs one read (`reads`); while it is paused, packets wait in the kernel and the resume
    takes them in one."""

    def __init__(self) -> None:
        self.paused = False
        self.waiting = 0
        self.reads = 0

    def is_closing(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return not self.paused

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        if self.waiting:
            self.reads += 1
            self.waiting = 0

    def arrive(self) -> None:
        if self.paused:
            self.waiting += 1
        else:
            self.reads += 1


class SocketModel:
    """A model that sends a token every `gap` seconds into a buffer, as into a socket: each pull
    of its stream is one network read and takes every token that arrived since the last one
    (`reads`: how many tokens each read took). Its `connection` follows the stream's hold."""

    def __init__(self, tokens: list[str], gap: float) -> None:
        self.tokens = tokens
        self.gap = gap
        self.reads: list[int] = []
        self.connection = FakeConnection()

    async def stream(
        self, request: CompletionRequest, *, hold: StreamHold | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        buffered: list[str] = []
        arrived = asyncio.Event()
        sent_all = False

        async def send() -> None:
            nonlocal sent_all
            for token in self.tokens:
                await asyncio.sleep(self.gap)
                self.connection.arrive()
                buffered.append(token)
                arrived.set()
            sent_all = True
            arrived.set()

        if hold is not None:
            hold.follow(self.connection)
        sender = asyncio.create_task(send())
        try:
            while True:
                if not buffered and not sent_all:
                    arrived.clear()
                    await arrived.wait()
                if buffered:
                    self.reads.append(len(buffered))
                    text = "".join(buffered)
                    buffered.clear()
                    yield TextDelta(text)
                elif sent_all:
                    break
            yield Completed(USAGE, "m", "stop")
        finally:
            sender.cancel()
            if hold is not None:
                hold.detach()


PACED_TICKS = {
    "first_flush_delay": 0.005,
    "flush_interval": 0.05,
    "flush_interval_per_reply": 0.0,
    "max_flush_interval": 0.05,
}


async def test_a_model_slower_than_the_reader_is_read_a_few_times_per_tick_not_per_token() -> None:
    """50 tokens 4 ms apart, 50 ms ticks: the reader lets them gather between ticks (a few reads
    per tick), and the stored text is whole, in order, written in a few statements."""
    store = FakeStore()
    tokens = [f"t{i} " for i in range(50)]
    model = SocketModel(tokens, gap=0.004)
    with capture_logs():
        await run(runner(store, model, **PACED_TICKS), make_job(), JobSignals())

    assert sum(model.reads) == 50
    assert len(model.reads) <= 20, model.reads  # one per token without pacing
    assert max(model.reads) > 1
    # ... and the connection is not read while the reader waits: the event loop too reads a few
    # times per tick, not once per token's packet.
    assert model.connection.reads <= 20, model.connection.reads
    assert not model.connection.paused
    [finished] = store.finished
    assert finished.outcome.status == "completed"
    assert finished.outcome.content == "".join(tokens)
    appended = "".join(p.text for batch in store.batches for p in batch)
    assert appended and finished.outcome.content.startswith(appended)


async def test_a_cancel_ends_a_paced_wait_at_once() -> None:
    store = FakeStore()
    signals = JobSignals()
    written = asyncio.Event()

    async def wrote(delta: str) -> None:
        written.set()

    store.on_append = wrote
    model = SocketModel([f"t{i} " for i in range(1000)], gap=0.01)
    slow_ticks = {**PACED_TICKS, "flush_interval": 30.0, "max_flush_interval": 30.0}
    job = asyncio.create_task(runner(store, model, **slow_ticks).run(make_job(), signals))
    await written.wait()  # the first write; from here on the reader waits out 30 s ticks
    await asyncio.sleep(0.05)
    signals.cancel.set()
    with capture_logs():
        await asyncio.wait_for(job, timeout=5)

    [finished] = store.finished
    assert finished.outcome.status == "cancelled"
    assert (finished.outcome.content or "").startswith("t0 t1 ")
