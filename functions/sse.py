"""Server-sent events for a reply: the event names and payloads clients see
(docs/api.md), formatted from `agentmarket.services.replies` events."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from agentmarket.services.replies import ReplyCreated, ReplyDeleted, ReplyEvent, ReplyFinished

__all__ = ["SSE_HEADERS", "ReplyStreamResponse", "render", "reply_response", "sse"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


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
    if event.kind == "reset":
        return sse("message.reset", {"message_id": str(message_id)}, event.id)
    return sse("message.delta", {"message_id": str(message_id), "delta": event.text}, event.id)


async def _text(
    message_id: uuid.UUID, events: AsyncGenerator[ReplyEvent, None]
) -> AsyncIterator[str]:
    # Closing the response closes the reply's events at once (and so its subscription).
    async with aclosing(events):
        async for event in events:
            yield render(message_id, event)


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
