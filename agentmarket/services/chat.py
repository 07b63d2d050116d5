"""Sending messages, conversations and message reads. All as the caller, under RLS; the writes
(send, cancel) go through private SECURITY DEFINER functions that check ownership in SQL."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentmarket.core.errors import (
    ConversationNotFound,
    DeploymentNotFound,
    FieldError,
    MessageNotFound,
    ValidationFailed,
)
from agentmarket.domain.models import (
    ChatExchange,
    ChatRequest,
    Conversation,
    ConversationDetail,
    ConversationList,
    Feedback,
    FeedbackRequest,
    Message,
    MessageError,
    MessagePage,
    NewConversation,
    Usage,
)
from agentmarket.services.streams import StreamState

SEND = "select * from private.send_chat_message(%s, %s, %s, %s, %s)"
STREAM_STATE = "select status, content, generation from private.message_stream_state(%s)"
CANCEL = "select private.cancel_chat_message(%s)"

MESSAGE_COLUMNS = """
id, conversation_id, role, content, status, error_code, error_message, model, prompt_tokens,
completion_tokens, ttft_ms, latency_ms, truncated, created_at, completed_at
"""
MESSAGES_BY_ID = f"select {MESSAGE_COLUMNS} from public.agent_messages where id = any(%s)"
MESSAGE_BY_ID = f"select {MESSAGE_COLUMNS} from public.agent_messages where id = %s"
MESSAGES_PAGE = f"""
select {MESSAGE_COLUMNS}
  from public.agent_messages
 where conversation_id = %(conversation_id)s
   and (%(before_ts)s::timestamptz is null or (created_at, id) < (%(before_ts)s, %(before_id)s))
 order by created_at desc, id desc
 limit %(limit)s
"""

CONVERSATION_COLUMNS = "id, deployment_id, title, message_count, last_message_at, created_at"
CONVERSATIONS_PAGE = f"""
select {CONVERSATION_COLUMNS}, coalesce(last_message_at, created_at) as sort_at
  from public.agent_conversations
 where deployment_id = %(deployment_id)s
   and (%(after_ts)s::timestamptz is null
        or (coalesce(last_message_at, created_at), id) < (%(after_ts)s, %(after_id)s))
 order by coalesce(last_message_at, created_at) desc, id desc
 limit %(limit)s
"""
CONVERSATION = f"""
select {CONVERSATION_COLUMNS} from public.agent_conversations
 where id = %s and deployment_id = %s
"""
DEPLOYMENT_VISIBLE = "select 1 from public.agent_deployments where id = %s"
CREATE_CONVERSATION = "select private.create_conversation(%s, %s)"
DELETE_CONVERSATION = "select private.delete_conversation(%s, %s)"
UPSERT_FEEDBACK = """
insert into public.message_feedback (message_id, user_id, rating, comment)
values (%s, auth.uid(), %s, %s)
on conflict (message_id, user_id) do update
   set rating = excluded.rating, comment = excluded.comment
returning message_id, rating, comment
"""
DELETE_FEEDBACK = "delete from public.message_feedback where message_id = %s"
ASSISTANT_MESSAGE = "select 1 from public.agent_messages where id = %s and role = 'assistant'"


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


# --- messages ------------------------------------------------------------------------------------


async def load_messages(
    conn: psycopg.AsyncConnection, ids: list[uuid.UUID]
) -> dict[uuid.UUID, Message]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(MESSAGES_BY_ID, (ids,))
        return {row["id"]: to_message(row) for row in await cur.fetchall()}


async def send_message(
    *,
    conn: psycopg.AsyncConnection,
    deployment_id: uuid.UUID,
    request: ChatRequest,
    trace_id: str | None,
) -> tuple[ChatExchange, bool]:
    """Store the user message and the queued reply, enqueue the job; (exchange, newly created)."""
    async with conn.cursor() as cur:
        await cur.execute(
            SEND,
            (
                deployment_id,
                request.conversation_id,
                request.message,
                request.client_message_id,
                trace_id,
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    conversation_id, user_id, reply_id, created = row
    messages = await load_messages(conn, [user_id, reply_id])
    exchange = ChatExchange(
        conversation_id=conversation_id,
        user_message=messages[user_id],
        assistant_message=messages[reply_id],
    )
    return exchange, bool(created)


async def get_message(*, conn: psycopg.AsyncConnection, message_id: uuid.UUID) -> Message:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(MESSAGE_BY_ID, (message_id,))
        row = await cur.fetchone()
    if row is None:
        raise MessageNotFound()
    return to_message(row)


async def stream_state(*, conn: psycopg.AsyncConnection, message_id: uuid.UUID) -> StreamState:
    """What a client (re)attaching to a reply's stream starts from (owner only)."""
    cur = await conn.execute(STREAM_STATE, (message_id,))
    row = await cur.fetchone()
    if row is None:
        raise MessageNotFound()
    return StreamState(status=row[0], content=row[1], generation=row[2])


async def cancel_message(*, conn: psycopg.AsyncConnection, message_id: uuid.UUID) -> Message:
    await conn.execute(CANCEL, (message_id,))
    return await get_message(conn=conn, message_id=message_id)


async def set_feedback(
    *, conn: psycopg.AsyncConnection, message_id: uuid.UUID, request: FeedbackRequest
) -> Feedback:
    async with conn.cursor() as cur:
        await cur.execute(ASSISTANT_MESSAGE, (message_id,))
        if await cur.fetchone() is None:
            raise MessageNotFound("No reply of yours has this id.")
        if request.rating is None:
            await cur.execute(DELETE_FEEDBACK, (message_id,))
            return Feedback(message_id=message_id, rating=None, comment=None)
        await cur.execute(UPSERT_FEEDBACK, (message_id, request.rating, request.comment))
        row = await cur.fetchone()
    assert row is not None
    return Feedback(message_id=row[0], rating=row[1], comment=row[2])


# --- conversations -------------------------------------------------------------------------------


async def _require_deployment(conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> None:
    async with conn.cursor() as cur:
        await cur.execute(DEPLOYMENT_VISIBLE, (deployment_id,))
        if await cur.fetchone() is None:
            raise DeploymentNotFound()


async def list_conversations(
    *, conn: psycopg.AsyncConnection, deployment_id: uuid.UUID, cursor: str | None, limit: int
) -> ConversationList:
    await _require_deployment(conn, deployment_id)
    after_ts, after_id = decode_cursor(cursor, "cursor")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            CONVERSATIONS_PAGE,
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
    *, conn: psycopg.AsyncConnection, deployment_id: uuid.UUID, request: NewConversation
) -> Conversation:
    await _require_deployment(conn, deployment_id)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CREATE_CONVERSATION, (deployment_id, request.title))
        row = await cur.fetchone()
        assert row is not None
        await cur.execute(CONVERSATION, (row["create_conversation"], deployment_id))
        created = await cur.fetchone()
    assert created is not None
    return Conversation.model_validate(created)


async def get_conversation(
    *,
    conn: psycopg.AsyncConnection,
    deployment_id: uuid.UUID,
    conversation_id: uuid.UUID,
    before: str | None,
    limit: int,
) -> ConversationDetail:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CONVERSATION, (conversation_id, deployment_id))
        conversation = await cur.fetchone()
        if conversation is None:
            raise ConversationNotFound()
        before_ts, before_id = decode_cursor(before, "before")
        await cur.execute(
            MESSAGES_PAGE,
            {
                "conversation_id": conversation_id,
                "before_ts": before_ts,
                "before_id": before_id,
                "limit": limit + 1,
            },
        )
        rows = await cur.fetchall()
    has_more = len(rows) > limit
    page = list(reversed(rows[:limit]))
    next_cursor = encode_cursor(page[0]["created_at"], page[0]["id"]) if has_more else None
    return ConversationDetail(
        **conversation,
        messages=MessagePage(
            data=[to_message(r) for r in page], has_more=has_more, next_cursor=next_cursor
        ),
    )


async def delete_conversation(
    *, conn: psycopg.AsyncConnection, deployment_id: uuid.UUID, conversation_id: uuid.UUID
) -> None:
    async with conn.cursor() as cur:
        await cur.execute(DELETE_CONVERSATION, (deployment_id, conversation_id))
        row = await cur.fetchone()
    if not row or not row[0]:
        raise ConversationNotFound()
