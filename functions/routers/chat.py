"""Chat with a deployment, its conversations, and its messages.

POST /api/agents/{deployment_id}/chat commits the user message, the queued reply and the job
first, then (blocking / streaming) waits on the instance's shared LISTEN fan-out: no request holds
a pooled connection or an open transaction while the model works.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from agentmarket.core import metrics
from agentmarket.core.auth import User
from agentmarket.core.errors import MessageNotFound
from agentmarket.db.caller import as_caller
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
    NewConversation,
)
from agentmarket.services import chat
from agentmarket.services.streams import Event, StreamState, follow
from functions.deps import AppState, CurrentUser, Events, State, UserConn
from functions.openapi import problem_responses

router = APIRouter(tags=["chat"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


async def read_message(state: AppState, user: User, message_id: uuid.UUID) -> Message:
    async with as_caller(state.pool, user.claims) as conn:
        return await chat.get_message(conn=conn, message_id=message_id)


async def read_stream_state(state: AppState, user: User, message_id: uuid.UUID) -> StreamState:
    async with as_caller(state.pool, user.claims) as conn:
        return await chat.stream_state(conn=conn, message_id=message_id)


async def stream_events(
    state: AppState,
    user: User,
    message_id: uuid.UUID,
    *,
    last_event_id: str | None,
    created: list[Message] | None = None,
) -> AsyncIterator[str]:
    """SSE for one reply: message.created (on a new send), deltas, then completed/failed (or
    message.deleted when its conversation is deleted meanwhile)."""
    async with state.hub.subscribe(message_id) as subscription:
        for message in created or []:
            # "0.0": resuming from here replays the reply from its start.
            yield sse("message.created", {"message": message.model_dump(mode="json")}, "0.0")
        events = follow(
            subscription,
            lambda: read_stream_state(state, user, message_id),
            last_event_id=last_event_id,
            ping_interval=state.settings.sse_ping_seconds,
        )
        last_id = "0.0"
        try:
            async for event in events:
                yield await render(state, user, message_id, event)
                last_id = event.id or last_id
                if event.kind == "done":
                    return
        except MessageNotFound:
            # Its conversation was deleted while we followed it: a terminal event, not pings.
            yield sse("message.deleted", {"message_id": str(message_id)}, last_id.rstrip("f") + "f")


async def render(state: AppState, user: User, message_id: uuid.UUID, event: Event) -> str:
    if event.kind == "ping":
        return sse("ping", {})
    if event.kind == "reset":
        return sse("message.reset", {"message_id": str(message_id)}, event.id)
    if event.kind == "delta":
        return sse("message.delta", {"message_id": str(message_id), "delta": event.text}, event.id)
    final = await read_message(state, user, message_id)
    name = "message.failed" if final.status == "failed" else "message.completed"
    return sse(name, {"message": final.model_dump(mode="json")}, event.id)


async def wait_for_reply(
    state: AppState, user: User, message_id: uuid.UUID, wait: float
) -> Message:
    """The reply once finished, or as it stands after `wait` seconds."""
    deadline = time.monotonic() + wait
    async with state.hub.subscribe(message_id) as subscription:
        current = await read_message(state, user, message_id)
        while not current.status.finished:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            notice = await subscription.next(remaining)
            if notice is None:
                return await read_message(state, user, message_id)  # as it stands now
            if notice.kind in ("done", "resync"):
                current = await read_message(state, user, message_id)
    return current


@router.post(
    "/api/agents/{deployment_id}/chat",
    response_model=ChatExchange,
    responses={
        202: {"model": ChatExchange, "description": "Accepted; the reply is still being written"},
        **problem_responses(400, 401, 404, 409, 413, 415, 422),
    },
)
async def send_chat(
    deployment_id: uuid.UUID,
    body: ChatRequest,
    request: Request,
    user: CurrentUser,
    state: State,
    events: Events,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Send a message; the reply comes back blocking (default), streamed (SSE) or async (202)."""
    mode = body.mode or (
        ChatMode.STREAMING if accept and "text/event-stream" in accept else ChatMode.BLOCKING
    )
    await state.limits.check_chat(user=user, deployment_id=deployment_id)
    async with as_caller(state.pool, user.claims) as conn:
        exchange, created = await chat.send_message(
            conn=conn,
            deployment_id=deployment_id,
            request=body,
            trace_id=getattr(request.state, "request_id", None),
        )
    if created:
        metrics.CHAT_MESSAGES.labels(mode=mode.value).inc()
        events.record(
            "agent.chat.message.sent",
            user_id=str(user.id),
            deployment_id=deployment_id,
            message_id=str(exchange.user_message.id),
            conversation_id=str(exchange.conversation_id),
            message_length=len(body.message),
            mode=mode.value,
        )
    reply_id = exchange.assistant_message.id
    if mode is ChatMode.STREAMING:
        return StreamingResponse(
            stream_events(
                state,
                user,
                reply_id,
                last_event_id=None,
                created=[exchange.user_message, exchange.assistant_message],
            ),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    if mode is ChatMode.BLOCKING and not exchange.assistant_message.status.finished:
        reply = await wait_for_reply(state, user, reply_id, state.settings.chat_wait_seconds)
        exchange = exchange.model_copy(update={"assistant_message": reply})
    done = exchange.assistant_message.status.finished
    return JSONResponse(
        exchange.model_dump(mode="json"),
        status_code=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED,
    )


@router.get(
    "/api/agents/{deployment_id}/conversations",
    response_model=ConversationList,
    responses=problem_responses(401, 404, 422),
)
async def list_conversations(
    conn: UserConn,
    deployment_id: uuid.UUID,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ConversationList:
    """Your conversations with this deployment, most recent first."""
    return await chat.list_conversations(
        conn=conn, deployment_id=deployment_id, cursor=cursor, limit=limit
    )


@router.post(
    "/api/agents/{deployment_id}/conversations",
    response_model=Conversation,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 404, 415, 422),
)
async def create_conversation(
    conn: UserConn, deployment_id: uuid.UUID, body: NewConversation
) -> Conversation:
    """Start an empty conversation (sending a message without one also starts one)."""
    return await chat.create_conversation(conn=conn, deployment_id=deployment_id, request=body)


@router.get(
    "/api/agents/{deployment_id}/conversations/{conversation_id}",
    response_model=ConversationDetail,
    responses=problem_responses(401, 404, 422),
)
async def get_conversation(
    conn: UserConn,
    deployment_id: uuid.UUID,
    conversation_id: uuid.UUID,
    before: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ConversationDetail:
    """The conversation with its latest messages (oldest first); page back with `before`."""
    return await chat.get_conversation(
        conn=conn,
        deployment_id=deployment_id,
        conversation_id=conversation_id,
        before=before,
        limit=limit,
    )


@router.delete(
    "/api/agents/{deployment_id}/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
async def delete_conversation(
    conn: UserConn, deployment_id: uuid.UUID, conversation_id: uuid.UUID
) -> Response:
    """Delete the conversation and its messages."""
    await chat.delete_conversation(
        conn=conn, deployment_id=deployment_id, conversation_id=conversation_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/api/messages/{message_id}", response_model=Message, responses=problem_responses(401, 404, 422)
)
async def get_message(conn: UserConn, message_id: uuid.UUID) -> Message:
    """One of your messages (poll a reply's status here)."""
    return await chat.get_message(conn=conn, message_id=message_id)


@router.get(
    "/api/messages/{message_id}/stream",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "SSE: the reply as it is written",
        },
        **problem_responses(401, 404, 422),
    },
)
async def stream_message(
    message_id: uuid.UUID,
    user: CurrentUser,
    state: State,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """(Re)attach to a reply's stream; with Last-Event-ID it resumes without gaps or repeats."""
    await read_stream_state(state, user, message_id)  # 404 before the stream starts
    return StreamingResponse(
        stream_events(state, user, message_id, last_event_id=last_event_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.post(
    "/api/messages/{message_id}/cancel",
    response_model=Message,
    responses=problem_responses(401, 404, 422),
)
async def cancel_message(message_id: uuid.UUID, user: CurrentUser, state: State) -> Message:
    """Stop a reply: a queued one is cancelled at once, a running one between chunks (its
    partial text is kept). Returns the message; poll or stream it to see the final state."""
    async with as_caller(state.pool, user.claims) as conn:
        message = await chat.cancel_message(conn=conn, message_id=message_id)
    if message.status.finished:
        return message
    return await wait_for_reply(state, user, message_id, wait=2.0)


@router.post(
    "/api/messages/{message_id}/feedback",
    response_model=Feedback,
    responses=problem_responses(401, 404, 415, 422),
)
async def message_feedback(
    conn: UserConn, message_id: uuid.UUID, body: FeedbackRequest
) -> Feedback:
    """Like or dislike a reply (null withdraws it), with an optional comment."""
    return await chat.set_feedback(conn=conn, message_id=message_id, request=body)
