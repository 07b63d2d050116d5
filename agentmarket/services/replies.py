"""Replies as they are written: waiting for one, or following its stream, as the caller.

A reply is written by a worker after the request that asked for it committed; whoever waits for
it holds no pooled connection and no open transaction meanwhile. It waits on the instance's
shared LISTEN fan-out (`StreamHub`) and reads the stored state as the caller, each read one
statement in a transaction of its own (`CallerSession.run()`: one round trip, no BEGIN/COMMIT),
so RLS keeps everyone to their own replies.
Formatting the events for a client (SSE) is the HTTP layer's business.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentmarket.core.errors import MessageNotFound
from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.domain.models import Message, MessageError, Usage
from agentmarket.services.limits import StreamSlots, held
from agentmarket.services.streams import Event, StreamHub, StreamState, Subscription, follow

__all__ = [
    "ReplyCreated",
    "ReplyDeleted",
    "ReplyEvent",
    "ReplyFinished",
    "fetch_message",
    "follow_reply",
    "open_reply_stream",
    "read_message",
    "read_stream_state",
    "to_message",
    "wait_for_reply",
]


def to_message(row: dict[str, Any]) -> Message:
    usage = (
        Usage(prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"])
        if row["prompt_tokens"] is not None and row["completion_tokens"] is not None
        else None
    )
    error = (
        MessageError(code=row["error_code"], message=row["error_message"] or "")
        if row["error_code"]
        else None
    )
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        status=row["status"],
        error=error,
        usage=usage,
        ttft_ms=row["ttft_ms"],
        latency_ms=row["latency_ms"],
        model=row["model"],
        truncated=row["truncated"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


# --- reads in a given transaction ----------------------------------------------------------------


async def fetch_message(conn: psycopg.AsyncConnection, message_id: uuid.UUID) -> Message:
    """One of the caller's messages (`MessageNotFound` otherwise)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("chat_message_by_id"), {"message_id": message_id})
        row = await cur.fetchone()
    if row is None:
        raise MessageNotFound()
    return to_message(row)


# --- reads in a transaction of their own ---------------------------------------------------------


async def read_message(*, db: CallerSession, message_id: uuid.UUID) -> Message:
    """One of the caller's messages (`MessageNotFound` otherwise), read on its own."""
    rows = await db.run(query("chat_message_by_id"), {"message_id": message_id})
    if not rows:
        raise MessageNotFound()
    return to_message(rows[0])


async def read_stream_state(*, db: CallerSession, message_id: uuid.UUID) -> StreamState:
    """A reply's stream state (owner only: `MessageNotFound` otherwise), read on its own."""
    rows = await db.run(query("chat_stream_state"), {"message_id": message_id})
    if not rows:
        raise MessageNotFound()
    row = rows[0]
    return StreamState(status=row["status"], content=row["content"], generation=row["generation"])


# --- waiting -------------------------------------------------------------------------------------


async def wait_for_reply(
    *,
    db: CallerSession,
    hub: StreamHub,
    message_id: uuid.UUID,
    wait: float,
    subscription: Subscription | None = None,
    current: Message | None = None,
) -> Message:
    """The reply once finished, or as it stands after `wait` seconds (call it after the request
    transaction ended: it holds no connection while it waits). A `subscription` opened by the
    caller (closed here) comes with the reply as `current` at a moment it was subscribed, which
    then is not read again; otherwise one is opened and the reply read now."""
    deadline = time.monotonic() + wait
    held = subscription if subscription is not None else hub.open(message_id)
    try:
        if current is None or subscription is None:
            current = await read_message(db=db, message_id=message_id)
        while not current.status.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            notice = await held.next(remaining)
            if notice is None:
                return await read_message(db=db, message_id=message_id)  # as it stands now
            if notice.kind in ("done", "resync", "closing"):
                current = await read_message(db=db, message_id=message_id)
            if notice.kind == "closing":
                break  # the instance is shutting down: answer with the reply as it stands
        return current
    finally:
        hub.close(message_id, held)


# --- following -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCreated:
    """A message stored by the send that opened the stream. Its id "0.0": resuming from it
    replays the reply from its start."""

    message: Message
    id: str = "0.0"


@dataclass(frozen=True)
class ReplyFinished:
    """The last event: the finished reply (completed, failed or cancelled)."""

    message: Message
    id: str | None


@dataclass(frozen=True)
class ReplyDeleted:
    """The last event when the reply's conversation was deleted while it was followed."""

    id: str


# Besides these, `Event`s of kind delta, reset and ping (never done: that is `ReplyFinished`).
ReplyEvent = ReplyCreated | ReplyFinished | ReplyDeleted | Event


async def follow_reply(
    *,
    db: CallerSession,
    hub: StreamHub,
    message_id: uuid.UUID,
    last_event_id: str | None,
    ping_interval: float,
    created: list[Message] | None = None,
    subscription: Subscription | None = None,
    initial: StreamState | None = None,
) -> AsyncGenerator[ReplyEvent, None]:
    """The events of one reply until it finishes, resuming after `last_event_id` if given; first
    `created` (the messages of the send that opened the stream, if any). A `subscription` opened
    by the caller (before the reply's send committed, so with the `initial` state known) is used
    and closed here; otherwise one is opened now and the state read."""
    held = subscription if subscription is not None else hub.open(message_id)
    finished: list[Message] = []

    async def read_done() -> StreamState:
        # The finished message is what the last event carries: one read serves both.
        finished.append(await read_message(db=db, message_id=message_id))
        return StreamState(finished[-1].status, finished[-1].content, 0)

    try:
        for message in created or []:
            yield ReplyCreated(message)
        events = follow(
            held,
            lambda: read_stream_state(db=db, message_id=message_id),
            last_event_id=last_event_id,
            ping_interval=ping_interval,
            initial=initial,
            read_done=read_done,
        )
        last_id = "0.0"
        try:
            async for event in events:
                if event.kind == "done":
                    final = finished[-1] if finished and finished[-1].status.finished else None
                    message = final or await read_message(db=db, message_id=message_id)
                    yield ReplyFinished(message, event.id)
                    return
                yield event
                last_id = event.id or last_id
        except MessageNotFound:
            # Its conversation was deleted while we followed it: a terminal event, not pings.
            yield ReplyDeleted(last_id.rstrip("f") + "f")
    finally:
        hub.close(message_id, held)


async def open_reply_stream(
    *,
    db: CallerSession,
    hub: StreamHub,
    slots: StreamSlots,
    user_id: uuid.UUID,
    message_id: uuid.UUID,
    last_event_id: str | None,
    ping_interval: float,
) -> AsyncGenerator[ReplyEvent, None]:
    """(Re)attach to a reply's stream: `TooManyStreams` when the caller has as many streams open
    on this instance as allowed, `MessageNotFound` (before the stream starts) unless it is one
    of the caller's replies; then its events, holding the
    caller's stream slot until they end or are closed. It subscribes before it reads the state
    the stream starts from (one statement on its own), so that read is the only one."""
    with slots.acquire(user_id) as slot:  # given back here only if this raises
        subscription = hub.open(message_id)
        try:
            state = await read_stream_state(db=db, message_id=message_id)
        except BaseException:
            hub.close(message_id, subscription)
            raise
        events = follow_reply(
            db=db,
            hub=hub,
            message_id=message_id,
            last_event_id=last_event_id,
            ping_interval=ping_interval,
            subscription=subscription,
            initial=state,
        )
    return held(events, slot, hub.hold(message_id, subscription))
