"""Server-sent events for a reply: the event names and payloads clients see
(docs/api.md), formatted from `agentmarket.services.replies` events.

A stream may end before its reply does with `stream.closing` (`{reason, retry_ms}`, and an SSE
`retry:` field): the instance is shutting down (`shutdown`) or the database stopped answering
(`database_unavailable`). The client resumes with `Last-Event-ID` (on any instance) after
`retry_ms`; the event has no id, so the last id the client saw stays the one to resume from.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
import structlog
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agentmarket.core.errors import ServiceUnavailable
from agentmarket.services.replies import ReplyCreated, ReplyDeleted, ReplyEvent, ReplyFinished

__all__ = ["SSE_HEADERS", "ReplyStreamResponse", "closing", "render", "reply_response", "sse"]

log = structlog.get_logger("agentmarket.streaming")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any, event_id: str | None = None, retry_ms: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    if retry_ms is not None:
        head += f"retry: {retry_ms}\n"
    return f"{head}event: {event}\ndata: {orjson.dumps(data, default=str).decode()}\n\n"


def closing(reason: str, retry_ms: int) -> str:
    """`stream.closing`: the stream ends now, resume it with Last-Event-ID after `retry_ms`."""
    return sse("stream.closing", {"reason": reason, "retry_ms": retry_ms}, retry_ms=retry_ms)


def render(message_id: uuid.UUID, event: ReplyEvent) -> str:
    """One event of the reply `message_id` as SSE text."""
    if isinstance(event, ReplyCreated):
        return sse("message.created", {"message": event.message.model_dump(mode="json")}, event.id)
    if isinstance(event, ReplyFinished):
        name = "message.failed" if event.message.status == "failed" else "message.completed"
        return sse(name, {"message": event.message.model_dump(mode="json")}, event.id)
    if isinstance(event, ReplyDeleted):
        return sse("message.deleted", {"message_id": str(message_id)}, event.id)
    if event.kind == "ping":
        return sse("ping", {})
    if event.kind == "closing":
        return closing(event.text, event.retry_ms)
    if event.kind == "reset":
        return sse("message.reset", {"message_id": str(message_id)}, event.id)
    return sse("message.delta", {"message_id": str(message_id), "delta": event.text}, event.id)


async def _text(
    message_id: uuid.UUID, events: AsyncGenerator[ReplyEvent, None]
) -> AsyncIterator[str]:
    # Closing the response closes the reply's events at once (and so its subscription).
    async with aclosing(events):
        try:
            async for event in events:
                yield render(message_id, event)
        except ServiceUnavailable as exc:
            # A read the stream needed failed (the database is away): end it cleanly and tell
            # the client when to resume, rather than cutting the response off.
            retry_ms = _retry_ms(exc)
            log.warning("stream.closing", reason=exc.code, message_id=str(message_id))
            yield closing(exc.code, retry_ms)


def _retry_ms(exc: ServiceUnavailable) -> int:
    try:
        return int(float(exc.headers.get("Retry-After", "2")) * 1000)
    except ValueError:
        return 2000


class ReplyStreamResponse(StreamingResponse):
    """A reply's SSE response that closes the reply's events however the response ends: also
    when the client left before the first byte and the body was never iterated (what gives an
    open-stream slot back, `agentmarket.services.limits`)."""

    def __init__(
        self,
        message_id: uuid.UUID,
        events: AsyncGenerator[ReplyEvent, None],
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            _text(message_id, events),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **(headers or {})},
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._events.aclose()


def reply_response(
    message_id: uuid.UUID,
    events: AsyncGenerator[ReplyEvent, None],
    *,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """The reply's events as a text/event-stream response (with extra `headers`, e.g. quotas)."""
    return ReplyStreamResponse(message_id, events, headers)
