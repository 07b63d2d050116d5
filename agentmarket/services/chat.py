"""Sending messages, conversations and message reads. All as the caller, under RLS; the writes
(send, cancel) go through private SECURITY DEFINER functions that check ownership in SQL.

A send commits the user message, the queued reply, the job and its `agent.chat.message.sent`
event first, in one statement that answers with both messages (counted once committed),
then waits for the reply (blocking) or hands back its events (streaming) through
`agentmarket.services.replies`: no request holds a pooled connection or an open transaction while
the model works.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncGenerator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
import structlog
from psycopg.rows import dict_row

from agentmarket.core.auth import User
from agentmarket.core.config import Settings
from agentmarket.core.errors import (
    ConversationNotFound,
    DeploymentNotFound,
    FieldError,
    LimitExceeded,
    MessageNotFound,
    ValidationFailed,
)
from agentmarket.core.metrics import CHAT_MESSAGES
from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.db.sqlstate import quota_headers
from agentmarket.domain.models import (
    ChatExchange,
    ChatMode,
    ChatRequest,
    Conversation,
    ConversationDetail,
    ConversationList,
    Feedback,
    FeedbackRequest,
    Message,
    MessagePage,
    NewConversation,
)
from agentmarket.services import replies
from agentmarket.services.limits import StreamSlots, held
from agentmarket.services.replies import ReplyEvent, fetch_message, to_message
from agentmarket.services.streams import StreamHub, StreamState
from agentmarket.services.telemetry import RATE_LIMITED_EVENT, event_row

log = structlog.get_logger("agentmarket")

__all__ = [
    "Sent",
    "cancel_message",
    "create_conversation",
    "decode_cursor",
    "delete_conversation",
    "encode_cursor",
    "get_conversation",
    "get_message",
    "list_conversations",
    "send_message",
    "set_feedback",
]


# --- cursors -------------------------------------------------------------------------------------


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, name: str) -> tuple[datetime | None, uuid.UUID | None]:
    if not cursor:
        return None, None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, row_id = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed(
            errors=[FieldError(path=f"/query/{name}", message="is not a valid cursor")]
        ) from exc


# --- sending -------------------------------------------------------------------------------------


# A reply as its send leaves it: queued, no text, first attempt.
NEW_REPLY = StreamState(status="queued", content="", generation=0)


@dataclass(frozen=True)
class Sent:
    """A send's answer: the exchange (the reply as it stands) and, when streaming, the reply's
    events (the exchange's two messages first)."""

    exchange: ChatExchange
    stream: AsyncGenerator[ReplyEvent, None] | None = None
    # RateLimit-Policy / RateLimit: the tighter of the user's and the deployment's quotas.
    headers: dict[str, str] = field(default_factory=dict)


async def _store(
    db: CallerSession,
    deployment_id: uuid.UUID,
    request: ChatRequest,
    trace_id: str | None,
    reply_id: uuid.UUID,
    mode: ChatMode,
) -> tuple[ChatExchange, bool, dict[str, str]]:
    """Store the user message and the queued reply (`reply_id` unless the send is a repeat),
    enqueue the job and record the product event (`mode` is one of its properties), under the
    limits the database checks in the same statement, and commit: one statement as the caller in
    a transaction of its own, answering with both messages. (exchange, newly created, quota
    headers)."""
    rows = await db.run(
        query("chat_send_message"),
        {
            "deployment_id": deployment_id,
            "conversation_id": request.conversation_id,
            "message": request.message,
            "client_message_id": request.client_message_id,
            "trace_id": trace_id,
            "reply_id": reply_id,
            "mode": mode.value,
        },
    )
    user_row, reply_row = rows  # the user's message first
    exchange = ChatExchange(
        conversation_id=user_row["conversation_id"],
        user_message=to_message(user_row),
        assistant_message=to_message(reply_row),
    )
    headers = quota_headers(
        user_row["quota_policy"],
        user_row["quota_limit"],
        60,
        user_row["quota_remaining"],
        user_row["quota_reset"],
    )
    return exchange, bool(user_row["created"]), headers


async def send_message(
    *,
    db: CallerSession,
    user: User,
    deployment_id: uuid.UUID,
    request: ChatRequest,
    mode: ChatMode,
    trace_id: str | None,
    hub: StreamHub,
    settings: Settings,
    slots: StreamSlots,
) -> Sent:
    """Send a message; the reply as it stands after waiting for it (blocking: up to
    CHAT_WAIT_SECONDS), its events (streaming), or as queued (async).

    The send commits before any waiting (one statement in a transaction of its own); a repeated
    `client_message_id` answers the original exchange and is not counted again. A streaming send
    takes one of the caller's stream slots first (`TooManyStreams`: nothing is stored) and gives
    it back if the send fails or when its stream ends.

    A send refused by a limit (429) is recorded as an `agent.chat.rate_limited` telemetry row
    (the refused statement rolled back, so in one of its own) for the admin metrics."""
    try:
        return await _send(
            db=db,
            user=user,
            deployment_id=deployment_id,
            request=request,
            mode=mode,
            trace_id=trace_id,
            hub=hub,
            settings=settings,
            slots=slots,
        )
    except LimitExceeded as exc:
        await _record_rejection(db, deployment_id, exc)
        raise


async def _record_rejection(
    db: CallerSession, deployment_id: uuid.UUID, exc: LimitExceeded
) -> None:
    """One telemetry row per refused send, as the caller; a failure to write it never hides the
    429 (problems.py counts the metric and logs the refusal either way)."""
    row = event_row(RATE_LIMITED_EVENT, None, deployment_id, {"limit": exc.limit, "code": exc.code})
    try:
        await db.run(query("telemetry_track_event"), row)
    except psycopg.Error:
        log.warning("telemetry.rejection_not_recorded", limit=exc.limit)


async def _send(
    *,
    db: CallerSession,
    user: User,
    deployment_id: uuid.UUID,
    request: ChatRequest,
    mode: ChatMode,
    trace_id: str | None,
    hub: StreamHub,
    settings: Settings,
    slots: StreamSlots,
) -> Sent:
    slot = slots.acquire(user.id) if mode is ChatMode.STREAMING else None
    with slot or nullcontext():
        # The new reply's id is ours to choose, so a send that follows its reply subscribes to
        # it before the send (and its commit) runs: every notice about it is received, and its
        # state then (queued, no text, as the send answers) need not be read back.
        reply_id = uuid.uuid4()
        subscription = hub.open(reply_id) if mode is not ChatMode.ASYNC else None
        try:
            exchange, created, headers = await _store(
                db, deployment_id, request, trace_id, reply_id, mode
            )
        except BaseException:
            if subscription is not None:
                hub.close(reply_id, subscription)
            raise
        reply = exchange.assistant_message
        if subscription is not None and not created:
            # A repeated send: the original reply, whose state must be read when followed.
            hub.close(reply_id, subscription)
            subscription = None
    if created:
        CHAT_MESSAGES.labels(mode=mode.value).inc()
        # Its telemetry row was written by the send itself; the log line as for other events.
        log.info(
            "agent.chat.message.sent",
            agent_id=None,
            message_id=str(exchange.user_message.id),
            conversation_id=str(exchange.conversation_id),
            message_length=len(request.message),
            mode=mode.value,
        )
    if slot is not None:
        stream = replies.follow_reply(
            db=db,
            hub=hub,
            message_id=reply.id,
            last_event_id=None,
            ping_interval=settings.sse_ping_seconds,
            created=[exchange.user_message, reply],
            subscription=subscription,
            initial=NEW_REPLY if subscription is not None else None,
        )
        holds = (slot,) if subscription is None else (slot, hub.hold(reply.id, subscription))
        return Sent(exchange, held(stream, *holds), headers)
    if mode is ChatMode.BLOCKING and not reply.status.finished:
        reply = await replies.wait_for_reply(
            db=db,
            hub=hub,
            message_id=reply.id,
            wait=settings.chat_wait_seconds,
            subscription=subscription,
            current=reply if subscription is not None else None,
        )
        exchange = exchange.model_copy(update={"assistant_message": reply})
    elif subscription is not None:
        hub.close(reply.id, subscription)
    return Sent(exchange, headers=headers)


# --- messages ------------------------------------------------------------------------------------


async def get_message(*, db: CallerSession, message_id: uuid.UUID) -> Message:
    return await fetch_message(await db.conn(), message_id)


async def cancel_message(*, db: CallerSession, hub: StreamHub, message_id: uuid.UUID) -> Message:
    """Stop a reply: a queued one is cancelled at once, a running one between chunks (its partial
    text is kept). The message once finished, or as it stands after up to two seconds."""
    conn = await db.conn()
    await conn.execute(query("chat_cancel_message"), {"message_id": message_id})
    message = await fetch_message(conn, message_id)
    await db.commit()
    if message.status.finished:
        return message
    return await replies.wait_for_reply(db=db, hub=hub, message_id=message_id, wait=2.0)


async def set_feedback(
    *, db: CallerSession, message_id: uuid.UUID, request: FeedbackRequest
) -> Feedback:
    conn = await db.conn()
    params = {"message_id": message_id, "rating": request.rating, "comment": request.comment}
    async with conn.cursor() as cur:
        await cur.execute(query("chat_assistant_message"), params)
        if await cur.fetchone() is None:
            raise MessageNotFound("No reply of yours has this id.")
        if request.rating is None:
            await cur.execute(query("chat_delete_feedback"), params)
            return Feedback(message_id=message_id, rating=None, comment=None)
        await cur.execute(query("chat_upsert_feedback"), params)
        row = await cur.fetchone()
    assert row is not None
    return Feedback(message_id=row[0], rating=row[1], comment=row[2])


# --- conversations -------------------------------------------------------------------------------


async def _require_deployment(conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> None:
    async with conn.cursor() as cur:
        await cur.execute(query("chat_deployment_visible"), {"deployment_id": deployment_id})
        if await cur.fetchone() is None:
            raise DeploymentNotFound()


async def list_conversations(
    *, db: CallerSession, deployment_id: uuid.UUID, cursor: str | None, limit: int
) -> ConversationList:
    conn = await db.conn()
    await _require_deployment(conn, deployment_id)
    after_ts, after_id = decode_cursor(cursor, "cursor")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("chat_conversations_page"),
            {
                "deployment_id": deployment_id,
                "after_ts": after_ts,
                "after_id": after_id,
                "limit": limit + 1,
            },
        )
        rows = await cur.fetchall()
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]["sort_at"], rows[-1]["id"]) if has_more else None
    return ConversationList(
        data=[
            Conversation.model_validate({k: v for k, v in r.items() if k != "sort_at"})
            for r in rows
        ],
        has_more=has_more,
        next_cursor=next_cursor,
    )


async def create_conversation(
    *, db: CallerSession, deployment_id: uuid.UUID, request: NewConversation
) -> Conversation:
    conn = await db.conn()
    await _require_deployment(conn, deployment_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("chat_create_conversation"),
            {"deployment_id": deployment_id, "title": request.title},
        )
        row = await cur.fetchone()
        assert row is not None
        await cur.execute(
            query("chat_conversation"),
            {"conversation_id": row["create_conversation"], "deployment_id": deployment_id},
        )
        created = await cur.fetchone()
    assert created is not None
    return Conversation.model_validate(created)


async def get_conversation(
    *,
    db: CallerSession,
    deployment_id: uuid.UUID,
    conversation_id: uuid.UUID,
    before: str | None,
    limit: int,
    max_page_bytes: int,
) -> ConversationDetail:
    """The conversation with a page of its messages (oldest first): at most `limit`, cut short
    (never below one) to `max_page_bytes` of content; `has_more` and the cursor continue from
    the oldest one returned."""
    conn = await db.conn()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("chat_conversation"),
            {"conversation_id": conversation_id, "deployment_id": deployment_id},
        )
        conversation = await cur.fetchone()
        if conversation is None:
            raise ConversationNotFound()
        before_ts, before_id = decode_cursor(before, "before")
        await cur.execute(
            query("chat_messages_page"),
            {
                "conversation_id": conversation_id,
                "before_ts": before_ts,
                "before_id": before_id,
                "limit": limit,
                "max_bytes": max_page_bytes,
            },
        )
        rows = await cur.fetchall()
    has_more = bool(rows) and rows[0]["fetched"] > len(rows)
    page = list(reversed(rows))
    next_cursor = encode_cursor(page[0]["created_at"], page[0]["id"]) if has_more else None
    return ConversationDetail(
        **conversation,
        messages=MessagePage(
            data=[to_message(r) for r in page], has_more=has_more, next_cursor=next_cursor
        ),
        feedback=[
            Feedback(message_id=r["id"], rating=r["feedback_rating"], comment=r["feedback_comment"])
            for r in page
            if r["feedback_rating"] is not None
        ],
    )


async def delete_conversation(
    *, db: CallerSession, deployment_id: uuid.UUID, conversation_id: uuid.UUID
) -> None:
    conn = await db.conn()
    async with conn.cursor() as cur:
        await cur.execute(
            query("chat_delete_conversation"),
            {"deployment_id": deployment_id, "conversation_id": conversation_id},
        )
        row = await cur.fetchone()
    if not row or not row[0]:
        raise ConversationNotFound()
