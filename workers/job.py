"""Answering one claimed job (docs/architecture.md#worker): its context (loaded by the claim; a
knowledge-base search for support agents) → admit → stream the model → relay the text → finish.

* While the job runs, a `LeaseKeeper` extends its lease; losing it (another worker took over after
  we stalled) stops the job without writing anything more (`JobLost`).
* The text goes out through the process's `Flusher` (workers.relay: one statement per tick for
  all replies); the reply's finish carries its whole text, so what was not written yet is never
  appended on its own.
* A cancellation (NOTIFY or the lease keeper) stops reading the model; the reply ends `cancelled`
  with the text relayed so far.
* `JobStore.finish` writes the reply, its metrics, the conversation, the job and the reply's
  product event in one transaction, only while we hold the lease, so a reply is never written
  twice.
* Cancelled from outside (shutting down past the grace period), the job is handed back.
* Losing the database (`agentmarket.db.pool.database_lost`: a lost or refused connection, a pool
  timeout) is never the reply's failure: the job is handed back if the database answers that,
  otherwise its lease (no longer extended) runs out and a claim takes it over
  (docs/operations.md#database-outages).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import psycopg
import structlog

from agentmarket.core import metrics, sentry
from agentmarket.core.faults import FAULT_MARKER, ForcedFault
from agentmarket.core.redaction import scrub
from agentmarket.db.pool import database_lost
from agentmarket.domain.secrets import SecretBox
from agentmarket.llm.client import (
    Completed,
    CompletionRequest,
    FallingBack,
    LLMError,
    Retrying,
    StreamEvent,
    TextDelta,
)
from agentmarket.llm.hold import StreamHold
from workers.config import WorkerConfig
from workers.context import (
    ModelDefaults,
    ReplyRefused,
    build_request,
    knowledge_question,
    sealed_api_key,
)
from workers.lease import JobSignals, LeaseKeeper, lease_interval
from workers.relay import Flusher, Relay
from workers.store import Job, JobContext, JobLost, LoadedJob, Outcome, ReplyEvent, Store

__all__ = ["JobRunner", "Model"]

log = structlog.get_logger("agentmarket.worker")

# A read of the model's stream that waited longer than this for its text means the model streams
# slower than the worker reads: its reader may pace itself by the relay's ticks (Relay.read_delay).
WAITED_FOR_TEXT: Final = 0.001


class Model(Protocol):
    """The model client (agentmarket.llm.client.LLMClient, or a fake one in tests)."""

    def stream(
        self, request: CompletionRequest, *, hold: StreamHold | None = None
    ) -> AsyncGenerator[StreamEvent, None]: ...


@dataclass(frozen=True)
class Streamed:
    status: str  # completed | cancelled
    completed: Completed | None  # the model's final event, when it was read
    fallback: bool = False  # answered by the fallback model (the primary kept failing)


class JobRunner:
    def __init__(
        self,
        store: Store,
        llm: Model,
        box: SecretBox,
        *,
        config: WorkerConfig,
        defaults: ModelDefaults,
        flusher: Flusher | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.store = store
        self.llm = llm
        self.box = box
        self.config = config
        self.defaults = defaults
        self._clock = clock
        self.flusher = flusher or Flusher.from_config(store, config, clock=clock)

    def _elapsed_ms(self, started: float) -> int:
        return int((self._clock() - started) * 1000)

    async def run(self, job: Job, signals: JobSignals) -> None:
        """Answer `job`, keeping its lease meanwhile; never raises but CancelledError. With
        Sentry, a transaction of its own that continues the send's trace."""
        with sentry.job_transaction("chat.reply", op="queue.process", trace=job.trace_id):
            await self._run(job, signals)

    async def _run(self, job: Job, signals: JobSignals) -> None:
        sentry.bind_context(
            job_id=job.id,
            message_id=str(job.message_id),
            trace_id=sentry.trace_id_of(job.trace_id),
            worker_id=self.config.worker_id,
        )
        started = self._clock()
        interval = lease_interval(self.config.lease_seconds)
        try:
            async with LeaseKeeper(self.store, job.id, signals, interval=interval):
                await self._attempt(job, signals, started)
        finally:
            structlog.contextvars.unbind_contextvars("job_id", "message_id", "trace_id")

    async def _attempt(self, job: Job, signals: JobSignals, started: float) -> None:
        loaded: list[JobContext] = []  # the reply's context, once loaded (for a crash's event)
        try:
            await self._answer(job, signals, started, loaded)
        except JobLost:
            log.warning("job.lease_lost", attempt=job.attempts)
        except asyncio.CancelledError:
            # Shutting down past the grace period: give the job back for another worker.
            await asyncio.shield(self._release(job))
            raise
        except Exception as exc:
            if database_lost(exc):
                # Retryable, whatever step met it: hand the job back, or let its lease run out.
                log.warning("job.database_lost", error=type(exc).__name__, attempt=job.attempts)
                await self._release(job)
                return
            log.error("job.crashed", exc_info=exc)
            sentry.capture_unexpected(exc)
            await self._finish_unanswered(
                job,
                started,
                "internal_error",
                "Something went wrong while answering; send the message again.",
                loaded[0] if loaded else job.loaded.context if job.loaded is not None else None,
            )

    async def _release(self, job: Job) -> None:
        try:
            await self.store.release(job.id)
        except psycopg.Error as exc:
            log.warning("job.release_failed", job_id=job.id, error=type(exc).__name__)
            return
        log.info("job.released", job_id=job.id)

    async def _answer(
        self, job: Job, signals: JobSignals, started: float, seen: list[JobContext]
    ) -> None:
        loaded = await self.store.load_context(
            job,
            knowledge_limit=self.config.knowledge_entries,
            knowledge_for=knowledge_question,
        )
        if loaded is None:
            raise JobLost()  # the conversation was deleted
        ctx = loaded.context
        seen.append(ctx)
        sentry.bind_context(
            deployment_id=str(ctx.deployment_id),
            agent=ctx.agent_slug,
            conversation_id=str(ctx.conversation_id),
            user_id=str(ctx.user_id),
        )
        try:
            request = build_request(
                loaded, self.box, defaults=self.defaults, history_chars=self.config.history_chars
            )
        except ReplyRefused as refused:
            await self._finish_unanswered(
                job, started, refused.code, refused.message, ctx, status=refused.status
            )
            return
        sentry.register_secrets([request.api_key])  # replaced wherever an event holds it
        if self.config.test_faults:
            _forced_fault(loaded, request)
        relay = self.flusher.relay(job.id, lambda: self.store.reset(job.id), started=started)
        try:
            try:
                streamed = await self._traced_stream(request, relay, signals)
            finally:
                relay.close()  # from here on the finish writes the text
        except LLMError as exc:
            sentry.breadcrumb(
                "model", "model call failed", error_code=exc.error_code, attempts=exc.attempts
            )
            await self._finish_unanswered(
                job,
                started,
                exc.error_code,
                exc.message,
                ctx,
                model_attempts=exc.attempts,
                # The provider refused the deployment's own key or account: the deployment goes
                # to `error` until its owner reconfigures it. The platform key being refused is
                # the operator's to fix, not the deployment's.
                deployment_error=(
                    f"{exc.error_code}: {exc.message}"
                    if exc.account_refused and request.api_key is not None
                    else None
                ),
                # ... only while that key is still the deployment's: its owner may have saved a
                # new one during the call.
                deployment_key=sealed_api_key(loaded.secrets),
            )
            return
        if relay.lost:
            raise JobLost()
        await self._finish_answered(job, ctx, request, relay, streamed, started)

    async def _traced_stream(
        self, request: CompletionRequest, relay: Relay, signals: JobSignals
    ) -> Streamed:
        """`_stream` within trace spans (with Sentry): the relay's, and the model call's in it
        (time to first token, tokens). Nothing is traced per piece of text."""
        with sentry.span("stream.relay", "relay reply") as relay_span:
            with sentry.span("gen_ai.chat", f"chat {request.model}") as model_span:
                streamed = await self._stream(request, relay, signals)
                if model_span is not None:
                    _describe_model_call(model_span, request, relay, streamed)
            if relay_span is not None:
                relay_span.set_data("chars", relay.length)
                relay_span.set_data("chars_appended_while_streaming", relay.written)
                relay_span.set_data("status", streamed.status)
        return streamed

    async def _stream(
        self, request: CompletionRequest, relay: Relay, signals: JobSignals
    ) -> Streamed:
        """Relay the model's reply until it completes, is cancelled or reaches the length limit."""
        completed: Completed | None = None
        fallback = False
        clock = self._clock
        hold = StreamHold()
        async with contextlib.aclosing(self.llm.stream(request, hold=hold)) as events:
            asked = clock()
            async for event in events:
                if signals.lost.is_set():
                    raise JobLost()
                if signals.cancel.is_set():
                    return Streamed("cancelled", completed, fallback)
                if isinstance(event, TextDelta):
                    if not relay.add(event.text):
                        break  # cut at the stored limit
                    if clock() - asked > WAITED_FOR_TEXT:
                        # The model is slower than we read: let its next tokens gather in the
                        # socket until just before the flush, then take them in one read; the
                        # connection is not read meanwhile (docs/architecture.md#worker).
                        delay = relay.read_delay()
                        if delay > 0:
                            with hold.held():
                                await _wait(signals.cancel, delay)
                            if signals.cancel.is_set():
                                return Streamed("cancelled", completed, fallback)
                elif isinstance(event, Retrying | FallingBack):
                    # The reply starts over (a new generation): followers get message.reset,
                    # then the new attempt's text from offset 0, no gap and no repeat.
                    await relay.restart()
                    fallback = fallback or isinstance(event, FallingBack)
                elif isinstance(event, Completed):
                    completed = event
                asked = clock()
        return Streamed("completed", completed, fallback)

    async def _finish_answered(
        self,
        job: Job,
        ctx: JobContext,
        request: CompletionRequest,
        relay: Relay,
        streamed: Streamed,
        started: float,
    ) -> None:
        completed = streamed.completed
        usage = completed.usage if completed else None
        outcome = Outcome(
            status=streamed.status,
            latency_ms=self._elapsed_ms(started),
            content=relay.text,
            model=(completed.model if completed else None) or request.model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            ttft_ms=relay.ttft_ms,
            truncated=completed.finish_reason == "length" if completed else relay.truncated,
        )
        event = ReplyEvent(
            "agent.chat.response.received",
            user_id=ctx.user_id,
            agent_id=ctx.agent_id,
            deployment_id=ctx.deployment_id,
            properties={
                "message_id": str(job.message_id),
                "status": outcome.status,
                "latency_ms": outcome.latency_ms,
                "ttft_ms": outcome.ttft_ms,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "model": outcome.model,
                "attempt": job.attempts,
                "truncated": outcome.truncated,
                "fallback": streamed.fallback,
            },
        )
        if not await self.store.finish(job.id, outcome, event):
            raise JobLost()
        metrics.CHAT_RESPONSE_TIME.observe(outcome.latency_ms / 1000)
        if usage:
            metrics.CHAT_TOKENS.labels(kind="prompt").inc(usage.prompt_tokens)
            metrics.CHAT_TOKENS.labels(kind="completion").inc(usage.completion_tokens)
        log.info(
            "job.finished",
            status=outcome.status,
            latency_ms=outcome.latency_ms,
            ttft_ms=outcome.ttft_ms,
            attempt=job.attempts,
            completion_tokens=outcome.completion_tokens,
            truncated=outcome.truncated,
            model=outcome.model,
            fallback=streamed.fallback,
        )

    async def _finish_unanswered(
        self,
        job: Job,
        started: float,
        code: str,
        message: str,
        ctx: JobContext | None,
        *,
        model_attempts: int | None = None,
        status: str = "failed",
        deployment_error: str | None = None,
        deployment_key: bytes | None = None,
    ) -> None:
        """End the reply without an answer: `failed` (counted as an error, with an
        `agent.chat.error` event whenever the reply's context is known) or `cancelled`.
        `deployment_error`: move the deployment to `error` with this reason, in the same
        transaction, if `deployment_key` (the sealed key that was refused) is still its key."""
        latency_ms = self._elapsed_ms(started)
        if status == "failed":
            metrics.CHAT_ERRORS.labels(error_type=code).inc()
        outcome = Outcome(
            status,
            latency_ms,
            error_code=code,
            error_message=message,
            deployment_error=deployment_error,
            deployment_key=deployment_key if deployment_error is not None else None,
        )
        event = None
        if ctx is not None and status == "failed":
            event = ReplyEvent(
                "agent.chat.error",
                user_id=ctx.user_id,
                agent_id=ctx.agent_id,
                deployment_id=ctx.deployment_id,
                properties={
                    "message_id": str(job.message_id),
                    "error_type": code,
                    "error_message": scrub(message),
                    "attempt": job.attempts,
                    "model_attempts": model_attempts,
                },
            )
        try:
            await self.store.finish(job.id, outcome, event)
        except psycopg.Error as exc:
            log.error("job.finish_failed", error=type(exc).__name__)
            return
        log.warning(
            f"job.{status}",
            error_code=code,
            latency_ms=latency_ms,
            model_attempts=model_attempts,
            deployment_error=deployment_error is not None,
        )


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `event` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _describe_model_call(
    span: sentry.Span, request: CompletionRequest, relay: Relay, streamed: Streamed
) -> None:
    """The model call's span data (OpenTelemetry's gen_ai names where there is one)."""
    completed = streamed.completed
    usage = completed.usage if completed else None
    span.set_data("gen_ai.request.model", request.model)
    span.set_data("gen_ai.response.model", completed.model if completed else None)
    span.set_data("gen_ai.usage.input_tokens", usage.prompt_tokens if usage else None)
    span.set_data("gen_ai.usage.output_tokens", usage.completion_tokens if usage else None)
    span.set_data("gen_ai.response.finish_reasons", completed.finish_reason if completed else None)
    span.set_data("ttft_ms", relay.ttft_ms)
    span.set_data("status", streamed.status)


def _forced_fault(loaded: LoadedJob, request: CompletionRequest) -> None:
    """APP_ENV=test only (agentmarket.core.faults): a reply asked to fail fails unexpectedly,
    with the user's message and the deployment's key in the exception's text on purpose."""
    history = loaded.history
    if history and history[-1].role == "user" and FAULT_MARKER in history[-1].content:
        raise ForcedFault(f"forced by {history[-1].content!r} (key {request.api_key})")
