"""A fake job store, a fake model and builders for the worker's records."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agentmarket.core.config import EncryptionKey
from agentmarket.domain.agents import KnowledgeEntry, Turn
from agentmarket.domain.secrets import SecretBox, secret_aad
from agentmarket.llm.client import CompletionRequest, StreamEvent
from agentmarket.llm.hold import StreamHold
from workers.store import (
    Job,
    JobContext,
    KnowledgeQuestion,
    LeaseState,
    LoadedJob,
    Outcome,
    Piece,
    ReplyEvent,
    StoredSecret,
)

KEY = EncryptionKey("k1", bytes(range(32)))
BOX = SecretBox([KEY])
USER_KEY = "sk-proj-" + "U1v2W3x4Y5z6" * 3 + "abcd"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def make_job(**overrides: Any) -> Job:
    base: dict[str, Any] = {
        "id": 7,
        "message_id": uuid.uuid4(),
        "attempts": 1,
        "created_at": NOW,
        "started_at": NOW,
        "trace_id": "req-1",
    }
    base.update(overrides)
    return Job(**base)


def make_context(**overrides: Any) -> JobContext:
    base: dict[str, Any] = {
        "message_id": uuid.uuid4(),
        "conversation_id": uuid.uuid4(),
        "reply_to": uuid.uuid4(),
        "reply_created_at": NOW,
        "deployment_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "config": {},
        "deployment_status": "active",
        "deleted_at": None,
        "requires_user_key": False,
        "agent_id": uuid.uuid4(),
        "agent_slug": "rev",
        "agent_name": "Rev",
        "kind": "chat",
        "model": "gpt-agent",
        "system_prompt": "You are Rev.",
    }
    base.update(overrides)
    return JobContext(**base)


def sealed_key(context: JobContext, value: str = USER_KEY) -> StoredSecret:
    sealed = BOX.seal(value, aad=secret_aad(context.deployment_id, "openai_api_key"))
    return StoredSecret("openai_api_key", sealed.key_id, sealed.ciphertext)


def make_loaded(
    context: JobContext | None = None,
    *,
    history: Sequence[Turn] = (Turn("user", "hello?"),),
    secrets: Sequence[StoredSecret] = (),
    knowledge: Sequence[KnowledgeEntry] = (),
) -> LoadedJob:
    return LoadedJob(context or make_context(), list(history), list(secrets), list(knowledge))


@dataclass
class Finished:
    job_id: int
    outcome: Outcome
    event: ReplyEvent | None


@dataclass
class FakeStore:
    """The job store in memory. `owned` false: the lease is lost (appends and finishes fail).
    `batches`: the append statements, each the pieces it carried."""

    loaded: LoadedJob | None = field(default_factory=make_loaded)
    owned: bool = True
    cancel_requested: bool = False
    appended: list[str] = field(default_factory=list)
    batches: list[list[Piece]] = field(default_factory=list)
    resets: int = 0
    finished: list[Finished] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    extensions: int = 0
    questions: list[str | None] = field(default_factory=list)
    on_append: Callable[[str], Awaitable[None]] | None = None
    on_extend: Callable[[int], None] | None = None  # called with the number of extensions

    @property
    def stored(self) -> str:
        return "".join(self.appended)

    async def extend_lease(self, job_id: int) -> LeaseState:
        self.extensions += 1
        if self.on_extend is not None:
            self.on_extend(self.extensions)
        return LeaseState(owned=self.owned, cancel_requested=self.cancel_requested)

    async def load_context(
        self, job: Job, *, knowledge_limit: int, knowledge_for: KnowledgeQuestion
    ) -> LoadedJob | None:
        if self.loaded is None:
            return None
        self.questions.append(knowledge_for(self.loaded.context, self.loaded.history))
        return replace(self.loaded, context=replace(self.loaded.context, message_id=job.message_id))

    async def append_batch(self, pieces: Sequence[Piece]) -> Mapping[int, int | None]:
        self.batches.append(list(pieces))
        lengths: dict[int, int | None] = {}
        for piece in pieces:
            if self.on_append is not None:
                await self.on_append(piece.text)
            if not self.owned:
                lengths[piece.job_id] = None
                continue
            assert piece.offset == len(self.stored)
            self.appended.append(piece.text)
            lengths[piece.job_id] = len(self.stored)
        return lengths

    async def reset(self, job_id: int) -> None:
        self.resets += 1
        self.appended.clear()

    async def finish(self, job_id: int, outcome: Outcome, event: ReplyEvent | None) -> bool:
        if not self.owned:
            return False
        self.finished.append(Finished(job_id, outcome, event))
        return True

    async def release(self, job_id: int) -> bool:
        self.released.append(job_id)
        return True


Step = StreamEvent | Exception | Callable[[], Awaitable[None]]


class FakeModel:
    """Streams the scripted steps: events are yielded, exceptions raised, callables awaited (to
    act between events, e.g. cancel the reply)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[CompletionRequest] = []
        self.closed = False

    async def stream(
        self, request: CompletionRequest, *, hold: StreamHold | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        self.requests.append(request)
        try:
            for step in self.steps:
                if isinstance(step, Exception):
                    raise step
                if callable(step):
                    await step()
                    continue
                yield step
        finally:
            self.closed = True


async def forever() -> None:
    await asyncio.Event().wait()


def after(count: int) -> tuple[asyncio.Event, Callable[[int], None]]:
    """An event set once `count` is reached, and the callback that counts."""
    reached = asyncio.Event()

    def seen(number: int) -> None:
        if number >= count:
            reached.set()

    return reached, seen
