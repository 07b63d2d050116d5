"""The job store: every statement the worker runs (docs/architecture.md#queue-and-leases).

The SQL lives in `agentmarket/db/sql/worker.sql` (named queries, named parameters); this is the
only module of the worker that runs any. Rows come back as the typed records below. Every
`private.*_chat_*` call acts only while this worker (`worker_id`) holds the job's lease.

* `claim` leases jobs (SKIP LOCKED), each with what answering it needs (context, history
  window, sealed secrets: `Job.loaded`), and says whether more are waiting (`Claim.more`): one
  statement. `load_context` adds the knowledge-base search for the agents that use one.
* `append_batch` writes the pending text of all of the process's active replies (workers.relay):
  one statement and one round trip, its own transaction, committed with synchronous_commit off
  (partial text need not wait for the WAL flush; the finish is durable).
* `finish` writes the reply, its metrics, the conversation and the job, plus the reply's product
  event (`ReplyEvent`), in one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Protocol

from psycopg import AsyncConnection
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from agentmarket.core import sentry
from agentmarket.db.queries import query
from agentmarket.domain.agents import KnowledgeEntry, Turn
from agentmarket.services.telemetry import check_event

__all__ = [
    "Claim",
    "Job",
    "JobContext",
    "JobLost",
    "JobStore",
    "KnowledgeQuestion",
    "LeaseState",
    "LoadedJob",
    "Outcome",
    "Piece",
    "QueueSample",
    "ReplyEvent",
    "Store",
    "StoredSecret",
]


class JobLost(Exception):
    """The lease is gone: another worker owns this reply now (or its conversation was deleted)."""


@dataclass(frozen=True)
class Job:
    """A claimed job (the columns of private.chat_jobs the worker uses)."""

    id: int
    message_id: uuid.UUID
    attempts: int
    created_at: datetime
    started_at: datetime | None
    trace_id: str | None
    # What the claim loaded for the reply (no knowledge yet); None when the reply was gone.
    loaded: LoadedJob | None = field(default=None, repr=False, compare=False)

    @property
    def pickup_seconds(self) -> float | None:
        """Queued → first claimed, for a first attempt (None for a retry)."""
        if self.attempts != 1 or self.started_at is None:
            return None
        return (self.started_at - self.created_at).total_seconds()


@dataclass(frozen=True)
class Claim:
    jobs: list[Job]
    more: bool  # the claim filled its limit and more jobs were waiting


@dataclass(frozen=True)
class Piece:
    """Text for one reply, starting at `offset` of its stored text (this attempt's)."""

    job_id: int
    offset: int
    text: str


@dataclass(frozen=True)
class QueueSample:
    """The queue as a timer samples it: jobs waiting, and how long the oldest claimable one has
    waited (0 when none)."""

    depth: int
    oldest_seconds: float


@dataclass(frozen=True)
class LeaseState:
    owned: bool  # false once the job is no longer this worker's
    cancel_requested: bool


@dataclass(frozen=True)
class JobContext:
    """The reply being written, its conversation, deployment, agent and prompt."""

    message_id: uuid.UUID
    conversation_id: uuid.UUID
    reply_to: uuid.UUID | None
    reply_created_at: datetime
    deployment_id: uuid.UUID
    user_id: uuid.UUID
    config: dict[str, Any]
    deployment_status: str
    deleted_at: datetime | None
    requires_user_key: bool
    agent_id: uuid.UUID
    agent_slug: str
    agent_name: str
    kind: str
    model: str
    system_prompt: str | None


@dataclass(frozen=True)
class StoredSecret:
    """A deployment secret as stored: sealed under key `key_id`."""

    field: str
    key_id: str
    ciphertext: bytes


@dataclass(frozen=True)
class LoadedJob:
    context: JobContext
    history: list[Turn]  # oldest first: the most recent finished turns, up to the limit
    secrets: list[StoredSecret]
    knowledge: list[KnowledgeEntry]  # support agents: the entries most relevant to the question


@dataclass(frozen=True)
class Outcome:
    """How a reply ends: its final status and what private.finish_chat_job stores with it."""

    status: str  # completed | failed | cancelled
    latency_ms: int
    content: str | None = None  # None keeps the text relayed so far
    error_code: str | None = None
    error_message: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: int | None = None
    truncated: bool = False
    # A failed reply whose model refused the deployment's own key or account: the deployment
    # moves to `error` with this status_reason, in the same transaction, if `deployment_key`
    # (the sealed key the refused call used) is still its stored key.
    deployment_error: str | None = None
    deployment_key: bytes | None = None


@dataclass(frozen=True)
class ReplyEvent:
    """A product event about a reply; the name must be one of services.telemetry.EVENTS."""

    name: str
    user_id: uuid.UUID
    agent_id: uuid.UUID
    deployment_id: uuid.UUID
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_event(self.name)


# Given the reply's context and history: the question to look up in the knowledge base, or None.
KnowledgeQuestion = Callable[[JobContext, Sequence[Turn]], str | None]


class Store(Protocol):
    """What processing one job needs from the store (a fake one in unit tests)."""

    async def extend_lease(self, job_id: int) -> LeaseState: ...

    async def load_context(
        self, job: Job, *, knowledge_limit: int, knowledge_for: KnowledgeQuestion
    ) -> LoadedJob | None: ...

    async def append_batch(self, pieces: Sequence[Piece]) -> Mapping[int, int | None]: ...

    async def reset(self, job_id: int) -> None: ...

    async def finish(self, job_id: int, outcome: Outcome, event: ReplyEvent | None) -> bool: ...

    async def release(self, job_id: int) -> bool: ...


class JobStore:
    """The queue and the replies in Postgres, for the worker `worker_id` (its own login's pool:
    autocommit connections)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        worker_id: str,
        lease_seconds: int,
        history_limit: int = 20,
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.history_limit = history_limit  # the most recent turns loaded with a claimed job

    def _lease(self, job_id: int) -> dict[str, Any]:
        return {"job_id": job_id, "worker_id": self.worker_id}

    @asynccontextmanager
    async def _connection(self, name: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection for the named query `name`, within a trace span named so (when
        the job's transaction is traced: agentmarket.core.sentry)."""
        with sentry.db_span(name):
            async with self.pool.connection() as conn:
                yield conn

    async def claim(self, limit: int, *, running: Sequence[int] = ()) -> Claim:
        """Lease up to `limit` runnable jobs, each with its context, and whether more are
        waiting (one statement). Jobs in `running` (answered by this worker now) are left alone
        even when their lease lapsed."""
        params = {
            "worker_id": self.worker_id,
            "limit": limit,
            "lease_seconds": self.lease_seconds,
            "history_limit": self.history_limit,
            "running": list(running),
        }
        async with (
            self._connection("claim_chat_jobs") as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(query("claim_chat_jobs"), params)
            rows = await cur.fetchall()
        return Claim([_claimed(row) for row in rows], any(row["more"] for row in rows))

    async def queue_sample(self) -> QueueSample:
        """Jobs waiting to be claimed and the oldest one's wait (sampled on a timer, not per
        claim)."""
        async with self._connection("chat_queue_depth") as conn:
            cur = await conn.execute(query("chat_queue_depth"))
            row = await cur.fetchone()
        return QueueSample(0, 0.0) if row is None else QueueSample(int(row[0]), float(row[1]))

    async def activity_sample(self, active_minutes: int) -> tuple[int, int]:
        """(deployments in service, conversations with a message in the last `active_minutes`
        minutes): the marketplace gauges, sampled on a timer."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                query("marketplace_activity"), {"active_minutes": active_minutes}
            )
            row = await cur.fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    async def fold_analytics(self) -> int:
        """Move the admin analytics' change rows into their cells (on a timer); how many."""
        async with self._connection("fold_analytics") as conn:
            cur = await conn.execute(query("fold_analytics"))
            row = await cur.fetchone()
        return 0 if row is None else int(row[0])

    async def extend_lease(self, job_id: int) -> LeaseState:
        params = {**self._lease(job_id), "lease_seconds": self.lease_seconds}
        async with self._connection("extend_chat_lease") as conn:
            cur = await conn.execute(query("extend_chat_lease"), params)
            row = await cur.fetchone()
        if row is None:
            return LeaseState(owned=False, cancel_requested=False)
        return LeaseState(owned=bool(row[0]), cancel_requested=bool(row[1]))

    async def append_batch(self, pieces: Sequence[Piece]) -> dict[int, int | None]:
        """Append and publish text for several replies (a reply's pieces in order, each starting
        where the one before ended), in one statement: each reply's new length, None where its
        lease is lost (or its stored text is not what the pieces follow on)."""
        params = {
            "worker_id": self.worker_id,
            "job_ids": [p.job_id for p in pieces],
            "offsets": [p.offset for p in pieces],
            "deltas": [p.text for p in pieces],
        }
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("append_chat_deltas"), params)
            rows = await cur.fetchall()
        return {int(job_id): None if length is None else int(length) for job_id, length, _ in rows}

    async def reset(self, job_id: int) -> None:
        async with self._connection("reset_chat_stream") as conn:
            await conn.execute(query("reset_chat_stream"), self._lease(job_id))

    async def finish(self, job_id: int, outcome: Outcome, event: ReplyEvent | None) -> bool:
        """End the job with `outcome`, and record `event` with it: one statement (so one
        transaction), only while the lease is ours. False (nothing written) when it is not."""
        params = {
            **self._lease(job_id),
            "status": outcome.status,
            "content": outcome.content,
            "error_code": outcome.error_code,
            "error_message": outcome.error_message,
            "model": outcome.model,
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "ttft_ms": outcome.ttft_ms,
            "latency_ms": outcome.latency_ms,
            "truncated": outcome.truncated,
            "deployment_error": outcome.deployment_error,
            "deployment_key": outcome.deployment_key,
            **_event_params(event),
        }
        async with self._connection("finish_chat_job") as conn:
            cur = await conn.execute(query("finish_chat_job"), params)
            row = await cur.fetchone()
        return row is not None and bool(row[0])

    async def release(self, job_id: int) -> bool:
        """Hand the job back for another worker (the attempt does not count)."""
        async with self._connection("release_chat_job") as conn:
            cur = await conn.execute(query("release_chat_job"), self._lease(job_id))
            row = await cur.fetchone()
        return row is not None and bool(row[0])

    async def load_context(
        self, job: Job, *, knowledge_limit: int, knowledge_for: KnowledgeQuestion
    ) -> LoadedJob | None:
        """What answering the reply needs: what its claim loaded (context, history and
        secrets), plus one knowledge-base search when `knowledge_for` asks a question (support
        agents); None when the reply is gone (its conversation was deleted)."""
        loaded = job.loaded
        if loaded is None:
            return None
        question = knowledge_for(loaded.context, loaded.history)
        if not question:
            return loaded
        async with self._connection("chat_job_knowledge") as conn:
            knowledge = await _knowledge(conn, loaded.context.config, question, knowledge_limit)
        return replace(loaded, knowledge=knowledge)


_CONTEXT_FIELDS = tuple(field.name for field in fields(JobContext))


def _claimed(row: dict[str, Any]) -> Job:
    """A claim's row as the job, with its reply's context when the reply is still there."""
    loaded = None
    if row["message_id"] is not None:
        context, history, secrets = _loaded(row)
        loaded = LoadedJob(context, history, secrets, [])
    return Job(
        id=row["job_id"],
        message_id=row["job_message_id"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        trace_id=row["trace_id"],
        loaded=loaded,
    )


def _loaded(row: dict[str, Any]) -> tuple[JobContext, list[Turn], list[StoredSecret]]:
    """A claim's row as the context, the history (oldest first) and the secrets."""
    context = JobContext(**{name: row[name] for name in _CONTEXT_FIELDS})
    history = [
        Turn(r, c) for r, c in zip(row["history_roles"], row["history_contents"], strict=True)
    ]
    secrets = [
        StoredSecret(f, k, bytes(c))
        for f, k, c in zip(
            row["secret_fields"], row["secret_key_ids"], row["secret_ciphertexts"], strict=True
        )
    ]
    return context, history, secrets


async def _knowledge(
    conn: AsyncConnection[Any], config: dict[str, Any], question: str, limit: int
) -> list[KnowledgeEntry]:
    async with conn.cursor(row_factory=class_row(KnowledgeEntry)) as cur:
        await cur.execute(
            query("chat_job_knowledge"),
            {"question": question, "config": Jsonb(config), "limit": limit},
        )
        return await cur.fetchall()


def _event_params(event: ReplyEvent | None) -> dict[str, Any]:
    """The finish statement's event parameters (all null: no event)."""
    if event is None:
        names = ("name", "user_id", "agent_id", "deployment_id", "properties")
        return {f"event_{name}": None for name in names}
    return {
        "event_name": check_event(event.name),
        "event_user_id": event.user_id,
        "event_agent_id": event.agent_id,
        "event_deployment_id": event.deployment_id,
        "event_properties": Jsonb(dict(event.properties)),
    }
