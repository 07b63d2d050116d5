"""The chat worker: LISTEN + claim → load context → handler(kind) → model stream → relay → finish.

* Claims go through `private.claim_chat_jobs` (SKIP LOCKED, lease). A NOTIFY on
  `agentmarket_chat_jobs` wakes the loop at once; polling every `poll_interval` covers a missed
  notification and reclaims expired leases.
* While a job runs, a keeper task extends its lease; losing the lease (another worker took over
  after we stalled) stops the job without writing anything.
* Text is relayed in batches: appended to the message and NOTIFYed in one small transaction (with
  synchronous_commit off: the final write is the durable one). The first token is flushed at once.
* `private.finish_chat_job` writes the reply, its metrics, the conversation and the job in one
  transaction, only while we hold the lease, so a reply is never written twice.
* SIGTERM: stop claiming, let running jobs finish for `grace` seconds, then release the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import structlog
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from agentmarket.core import metrics
from agentmarket.core.config import Settings
from agentmarket.domain.agents import ChatContext, KnowledgeEntry, Turn, handler_for
from agentmarket.domain.secrets import SecretBox, SecretDecryptError, secret_aad
from agentmarket.llm.client import (
    Completed,
    CompletionRequest,
    LLMClient,
    LLMError,
    Retrying,
    TextDelta,
)

log = structlog.get_logger("agentmarket.worker")

CLAIM = "select * from private.claim_chat_jobs(%s, %s, %s)"
EXTEND = "select * from private.extend_chat_lease(%s, %s, %s)"
# One statement, one round trip: the statement is its own transaction (autocommit) and the local
# synchronous_commit=off applies to its commit (partial text need not wait for the WAL flush).
APPEND = (
    "select private.append_chat_delta(%s, %s, %s), set_config('synchronous_commit', 'off', true)"
)
RESET = "select private.reset_chat_stream(%s, %s)"
FINISH = "select private.finish_chat_job(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
RELEASE = "select private.release_chat_job(%s, %s)"
QUEUE_DEPTH = "select count(*) from private.chat_jobs where status = 'queued'"
# The stored limit of a message's text (agent_messages_content_length): a longer reply is cut here.
MAX_REPLY_CHARS = 200_000

JOB_CONTEXT = """
select m.id as message_id, m.conversation_id, m.reply_to, m.created_at as reply_created_at,
       c.deployment_id, c.user_id, d.config, d.status as deployment_status, d.deleted_at,
       coalesce(a.config_schema -> 'required', '[]'::jsonb) ? 'openai_api_key'
         as requires_user_key,
       a.id as agent_id, a.slug as agent_slug, a.name as agent_name, a.kind, a.model,
       p.system_prompt
  from public.agent_messages m
  join public.agent_conversations c on c.id = m.conversation_id
  join public.agent_deployments d on d.id = c.deployment_id
  join public.marketplace_agents a on a.id = d.agent_id
  left join private.agent_prompts p on p.agent_id = a.id
 where m.id = %s
"""
HISTORY = """
select role, content
  from public.agent_messages
 where conversation_id = %(conversation_id)s
   and created_at <= %(until)s
   and id <> %(reply_id)s
   and status = 'completed'
   and content <> ''
 order by created_at desc, id desc
 limit %(limit)s
"""
SECRETS = (
    "select field, key_id, ciphertext from private.deployment_secrets where deployment_id = %s"
)
# Support agents: the knowledge-base entries of the deployment's config most relevant to the
# question, by Postgres full-text search (titles weigh more), best first.
KNOWLEDGE = """
with question as (
  select websearch_to_tsquery('english', %(question)s) as q,
         to_tsquery('english', coalesce(nullif(array_to_string(
           array(select quote_literal(w) || ':*'
                   from regexp_split_to_table(lower(left(%(question)s, 500)), '[^[:alnum:]]+') w
                  where length(w) > 2), ' | '), ''), 'nothing_matches_this')) as loose
), entries as (
  select e ->> 'title' as title, e ->> 'content' as content, ord,
         setweight(to_tsvector('english', coalesce(e ->> 'title', '')), 'A')
         || setweight(to_tsvector('english', coalesce(e ->> 'content', '')), 'B') as doc
    from jsonb_array_elements(coalesce(%(config)s::jsonb -> 'knowledge_base', '[]'::jsonb))
         with ordinality as kb(e, ord)
)
select title, content
  from entries, question
 where doc @@ question.q or doc @@ question.loose
 order by ts_rank_cd(doc, question.q) + 0.5 * ts_rank_cd(doc, question.loose) desc, ord
 limit %(limit)s
"""
TRACK = (
    "insert into private.telemetry_events (name, user_id, agent_id, deployment_id, properties)"
    " values (%s, %s, %s, %s, %s)"
)


@dataclass
class WorkerConfig:
    concurrency: int = 8
    lease_seconds: int = 30
    poll_interval: float = 1.0
    grace_seconds: float = 20.0
    history_messages: int = 20
    history_chars: int = 24_000
    knowledge_entries: int = 4
    flush_interval: float = 0.1
    flush_chars: int = 1_500
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )


@dataclass
class Running:
    job_id: int
    message_id: uuid.UUID
    task: asyncio.Task[None] | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)


class JobLost(Exception):
    """The lease is gone: another worker owns this reply now."""


class ReplyRefused(Exception):
    """The reply must not reach the model: it ends at once with `status` and `code`."""

    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ChatWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        config: WorkerConfig | None = None,
        llm: LLMClient | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or WorkerConfig()
        self.llm = llm or LLMClient(
            base_url=settings.openai_base_url,
            platform_api_key=(
                settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            ),
            timeout=settings.openai_timeout_seconds,
        )
        self.box = SecretBox(settings.encryption_keys)
        # The worker's own service login (WORKER_DATABASE_URL: acts as service_role, not a
        # superuser), a session connection: LISTEN and lease-holding claims need one.
        self.pool = AsyncConnectionPool(
            settings.worker_url,
            # Database work per reply is a few short statements: a modest pool serves many
            # concurrent replies (and leaves connections for everyone else).
            min_size=min(4, self.config.concurrency),
            max_size=min(self.config.concurrency + 2, 24),
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,
                "application_name": "agentmarket-worker",
            },
            open=False,
            name="agentmarket-worker",
        )
        self.running: dict[int, Running] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running jobs finish (or are released after the grace period)."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        await self.pool.open(wait=True)
        listener = asyncio.create_task(self._listen(), name="worker-listen")
        log.info(
            "worker.started", worker_id=self.config.worker_id, concurrency=self.config.concurrency
        )
        try:
            while not self._stopping.is_set():
                # Clear before claiming: a NOTIFY that arrives during the claim wakes us again.
                self._wake.clear()
                free = self.config.concurrency - len(self.running)
                if free > 0:
                    await self._claim(free)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._drain()
            await self.llm.aclose()
            await self.pool.close()
            log.info("worker.stopped", worker_id=self.config.worker_id)

    async def _drain(self) -> None:
        """Running jobs get `grace_seconds` to finish; the rest hand their jobs back."""
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.running.clear()

    async def _release(self, running: Running) -> None:
        try:
            async with self.pool.connection() as conn:
                await conn.execute(RELEASE, (running.job_id, self.config.worker_id))
        except psycopg.Error as exc:
            log.warning("job.release_failed", job_id=running.job_id, error=type(exc).__name__)
            return
        log.info("job.released", job_id=running.job_id)

    async def _listen(self) -> None:
        """Wake on new jobs; learn about cancellations. Reconnects after errors."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.settings.worker_url,
                    autocommit=True,
                    prepare_threshold=None,
                    application_name="agentmarket-worker-listen",
                ) as conn:
                    await conn.execute("LISTEN agentmarket_chat_jobs")
                    await conn.execute("LISTEN agentmarket_chat_cancel")
                    self._wake.set()  # catch up on anything enqueued while we were away
                    async for notify in conn.notifies():
                        if notify.channel == "agentmarket_chat_cancel":
                            self._cancel(notify.payload)
                        else:
                            self._wake.set()
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning("worker.listen_failed", error=type(exc).__name__)
                await asyncio.sleep(1)

    def _cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            message_id = uuid.UUID(payload)
            for running in self.running.values():
                if running.message_id == message_id:
                    running.cancel.set()

    async def _claim(self, limit: int) -> None:
        try:
            async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(CLAIM, (self.config.worker_id, limit, self.config.lease_seconds))
                jobs = await cur.fetchall()
                await cur.execute(QUEUE_DEPTH)
                depth = await cur.fetchone()
        except psycopg.Error as exc:
            log.warning("worker.claim_failed", error=type(exc).__name__)
            return
        if depth is not None:
            metrics.QUEUE_DEPTH.set(next(iter(depth.values())))
        for job in jobs:
            lag = (
                (job["started_at"] - job["created_at"]).total_seconds()
                if job["attempts"] == 1
                else None
            )
            if lag is not None:
                metrics.QUEUE_PICKUP.observe(max(lag, 0.0))
            running = Running(job_id=job["id"], message_id=job["message_id"])
            self.running[job["id"]] = running
            running.task = asyncio.create_task(self._process(job, running), name=f"job-{job['id']}")

    # --- one job ---------------------------------------------------------------------------------

    async def _process(self, job: dict[str, Any], running: Running) -> None:
        structlog.contextvars.bind_contextvars(
            job_id=job["id"], message_id=str(job["message_id"]), trace_id=job.get("trace_id")
        )
        keeper = asyncio.create_task(self._keep_lease(running))
        started = time.perf_counter()
        try:
            await self._answer(job, running, started)
        except JobLost:
            log.warning("job.lease_lost", attempt=job["attempts"])
        except asyncio.CancelledError:
            # Shutting down past the grace period: give the job back for another worker.
            await asyncio.shield(self._release(running))
            raise
        except Exception as exc:
            log.error("job.crashed", exc_info=exc)
            await self._finish_unanswered(
                job,
                running,
                started,
                "internal_error",
                "Something went wrong while answering; send the message again.",
                None,
            )
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self.running.pop(job["id"], None)
            structlog.contextvars.unbind_contextvars("job_id", "message_id", "trace_id")
            self._wake.set()

    async def _keep_lease(self, running: Running) -> None:
        interval = max(self.config.lease_seconds / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.pool.connection() as conn, conn.cursor() as cur:
                    await cur.execute(
                        EXTEND, (running.job_id, self.config.worker_id, self.config.lease_seconds)
                    )
                    row = await cur.fetchone()
            except psycopg.Error:
                continue  # try again next round; the lease has slack
            if row is None or not row[0]:
                running.lost.set()
                return
            if row[1]:
                running.cancel.set()

    async def _load(
        self, job: dict[str, Any]
    ) -> tuple[dict[str, Any], ChatContext, list[dict[str, Any]]]:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(JOB_CONTEXT, (job["message_id"],))
            ctx = await cur.fetchone()
            if ctx is None:
                raise JobLost()  # the conversation was deleted
            await cur.execute(
                HISTORY,
                {
                    "conversation_id": ctx["conversation_id"],
                    "until": ctx["reply_created_at"],
                    "reply_id": ctx["message_id"],
                    "limit": self.config.history_messages,
                },
            )
            rows = list(reversed(await cur.fetchall()))
            await cur.execute(SECRETS, (ctx["deployment_id"],))
            sealed = await cur.fetchall()
            knowledge: list[KnowledgeEntry] = []
            question = rows[-1]["content"] if rows else ""
            if ctx["kind"] == "support" and question:
                await cur.execute(
                    KNOWLEDGE,
                    {
                        "question": question,
                        "config": Jsonb(ctx["config"]),
                        "limit": self.config.knowledge_entries,
                    },
                )
                knowledge = [KnowledgeEntry(r["title"], r["content"]) for r in await cur.fetchall()]
        history = _bounded([Turn(r["role"], r["content"]) for r in rows], self.config.history_chars)
        context = ChatContext(
            agent_name=ctx["agent_name"],
            system_prompt=ctx["system_prompt"] or f"You are {ctx['agent_name']}.",
            config=ctx["config"],
            history=history,
            knowledge=knowledge,
        )
        return ctx, context, sealed

    def _admit(self, ctx: dict[str, Any], sealed: list[dict[str, Any]]) -> str | None:
        """Whether the reply may reach the model, and with which key: the user's own, or None for
        the platform key. Refused for a deleted deployment (a send that raced the delete; the
        delete cancels the others), and the platform key never stands in for the user's: not for
        an agent that requires it, nor when the stored one is unreadable."""
        if ctx["deleted_at"] is not None:
            raise ReplyRefused(
                "cancelled",
                "deployment_deleted",
                "The deployment was deleted before this reply was finished.",
            )
        for secret in sealed:
            if secret["field"] != "openai_api_key":
                continue
            try:
                return self.box.open(
                    secret["key_id"],
                    bytes(secret["ciphertext"]),
                    aad=secret_aad(ctx["deployment_id"], secret["field"]),
                )
            except SecretDecryptError:
                log.error("job.secret_unreadable", field=secret["field"])
                raise ReplyRefused(
                    "failed",
                    "secret_unreadable",
                    "Your stored API key could not be read; enter it again in the deployment's "
                    "settings.",
                ) from None
        if ctx["requires_user_key"]:
            raise ReplyRefused(
                "failed",
                "missing_api_key",
                "This agent answers with your own OpenAI API key; add it in the deployment's "
                "settings.",
            )
        return None

    def _max_tokens(self, config: dict[str, Any]) -> int:
        """The setting's bound, or less when the deployment's config asks for less."""
        bound = self.settings.openai_max_tokens
        wanted = config.get("max_tokens")
        if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
            return min(wanted, bound)
        return bound

    async def _answer(self, job: dict[str, Any], running: Running, started: float) -> None:
        ctx, context, sealed = await self._load(job)
        structlog.contextvars.bind_contextvars(
            deployment_id=str(ctx["deployment_id"]), agent=ctx["agent_slug"]
        )
        try:
            api_key = self._admit(ctx, sealed)
        except ReplyRefused as refused:
            await self._finish_unanswered(
                job, running, started, refused.code, refused.message, ctx, status=refused.status
            )
            return
        messages = handler_for(ctx["kind"]).build(context)
        temperature = ctx["config"].get("temperature")
        request = CompletionRequest(
            model=ctx["model"] or self.settings.openai_model,
            messages=messages,
            temperature=float(temperature) if isinstance(temperature, int | float) else None,
            max_tokens=self._max_tokens(ctx["config"]),
            api_key=api_key,
        )
        text: list[str] = []
        pending: list[str] = []
        last_flush = time.perf_counter()
        ttft_ms: int | None = None
        usage = None
        model = request.model
        status = "completed"
        length = 0
        truncated = False

        async def flush() -> None:
            nonlocal last_flush
            chunk = "".join(pending)
            pending.clear()
            last_flush = time.perf_counter()
            while chunk:
                piece, chunk = chunk[: self.config.flush_chars], chunk[self.config.flush_chars :]
                async with self.pool.connection() as conn:
                    cur = await conn.execute(APPEND, (job["id"], self.config.worker_id, piece))
                    row = await cur.fetchone()
                if row is None or row[0] is None:
                    raise JobLost()

        try:
            async with contextlib.aclosing(self.llm.stream(request)) as events:
                async for event in events:
                    if running.lost.is_set():
                        raise JobLost()
                    if running.cancel.is_set():
                        status = "cancelled"
                        break
                    if isinstance(event, TextDelta):
                        if ttft_ms is None:
                            ttft_ms = int((time.perf_counter() - started) * 1000)
                            metrics.CHAT_TTFT.observe(ttft_ms / 1000)
                        piece = event.text
                        if length + len(piece) > MAX_REPLY_CHARS:
                            # Cut cleanly at the stored limit; the reply is complete as stored.
                            piece, truncated = piece[: MAX_REPLY_CHARS - length], True
                        length += len(piece)
                        text.append(piece)
                        pending.append(piece)
                        if truncated:
                            break
                        if ttft_ms is not None and (
                            len(text) == 1
                            or time.perf_counter() - last_flush >= self.config.flush_interval
                            or sum(map(len, pending)) >= self.config.flush_chars
                        ):
                            await flush()
                    elif isinstance(event, Retrying):
                        text.clear()
                        pending.clear()
                        length = 0
                        ttft_ms = None
                        async with self.pool.connection() as conn:
                            await conn.execute(RESET, (job["id"], self.config.worker_id))
                    elif isinstance(event, Completed):
                        usage = event.usage
                        model = event.model or model
                        truncated = event.finish_reason == "length"
        except LLMError as exc:
            await self._finish_unanswered(
                job, running, started, exc.error_code, exc.message, ctx, model_attempts=exc.attempts
            )
            return
        if pending:
            await flush()
        latency_ms = int((time.perf_counter() - started) * 1000)
        content = "".join(text)
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                FINISH,
                (
                    job["id"],
                    self.config.worker_id,
                    status,
                    content,
                    None,
                    None,
                    model,
                    usage.prompt_tokens if usage else None,
                    usage.completion_tokens if usage else None,
                    ttft_ms,
                    latency_ms,
                    truncated,
                ),
            )
            row = await cur.fetchone()
            if row is None or not row[0]:
                raise JobLost()
            await conn.execute(
                TRACK,
                (
                    "agent.chat.response.received",
                    ctx["user_id"],
                    ctx["agent_id"],
                    ctx["deployment_id"],
                    Jsonb(
                        {
                            "message_id": str(job["message_id"]),
                            "status": status,
                            "latency_ms": latency_ms,
                            "ttft_ms": ttft_ms,
                            "prompt_tokens": usage.prompt_tokens if usage else None,
                            "completion_tokens": usage.completion_tokens if usage else None,
                            "model": model,
                            "attempt": job["attempts"],
                            "truncated": truncated,
                        }
                    ),
                ),
            )
        metrics.CHAT_RESPONSE_TIME.observe(latency_ms / 1000)
        if usage:
            metrics.CHAT_TOKENS.labels(kind="prompt").inc(usage.prompt_tokens)
            metrics.CHAT_TOKENS.labels(kind="completion").inc(usage.completion_tokens)
        log.info(
            "job.finished",
            status=status,
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            attempt=job["attempts"],
            completion_tokens=usage.completion_tokens if usage else None,
            truncated=truncated,
        )

    async def _finish_unanswered(
        self,
        job: dict[str, Any],
        running: Running,
        started: float,
        code: str,
        message: str,
        ctx: dict[str, Any] | None,
        *,
        model_attempts: int | None = None,
        status: str = "failed",
    ) -> None:
        """End the reply without an answer: `failed` (counted as an error) or `cancelled`."""
        latency_ms = int((time.perf_counter() - started) * 1000)
        if status == "failed":
            metrics.CHAT_ERRORS.labels(error_type=code).inc()
        try:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    FINISH,
                    (
                        job["id"],
                        self.config.worker_id,
                        status,
                        None,
                        code,
                        message,
                        None,
                        None,
                        None,
                        None,
                        latency_ms,
                        False,
                    ),
                )
                row = await cur.fetchone()
                if row and row[0] and ctx is not None and status == "failed":
                    await conn.execute(
                        TRACK,
                        (
                            "agent.chat.error",
                            ctx["user_id"],
                            ctx["agent_id"],
                            ctx["deployment_id"],
                            Jsonb(
                                {
                                    "message_id": str(job["message_id"]),
                                    "error_type": code,
                                    "attempt": job["attempts"],
                                    "model_attempts": model_attempts,
                                }
                            ),
                        ),
                    )
        except psycopg.Error as exc:
            log.error("job.finish_failed", error=type(exc).__name__)
            return
        log.warning(
            f"job.{status}", error_code=code, latency_ms=latency_ms, model_attempts=model_attempts
        )


def _bounded(history: list[Turn], max_chars: int) -> list[Turn]:
    """The most recent turns that fit in `max_chars` (always at least the last one)."""
    kept: list[Turn] = []
    total = 0
    for turn in reversed(history):
        total += len(turn.content)
        if kept and total > max_chars:
            break
        kept.append(turn)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)  # a window starts with the user speaking
    return kept
