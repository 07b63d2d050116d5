"""Chat with a deployment, its conversations, and its messages.

POST /api/agents/{deployment_id}/chat commits the user message, the queued reply and the job
first, then (blocking / streaming) waits on the instance's shared LISTEN fan-out
(`agentmarket.services.chat`, `agentmarket.services.replies`): no request holds a pooled
connection or an open transaction while the model works. Streams are formatted as SSE by
`functions.sse`.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from agentmarket.core import sentry
from agentmarket.domain.models import (
    ChatExchange,
    ChatMode,
    ChatRequest,
    Conversation,
    ConversationDetail,
    ConversationExport,
    ConversationList,
    Feedback,
    FeedbackRequest,
    Message,
    NewConversation,
)
from agentmarket.services import chat, export, replies
from agentmarket.services.export import ExportFormat
from functions.deps import AppSettings, CurrentUser, State, UserSession
from functions.openapi import problem_responses
from functions.sse import reply_response

__all__ = ["router"]

router = APIRouter(tags=["chat"])


@router.post(
    "/api/agents/{deployment_id}/chat",
    response_model=ChatExchange,
    responses={
        202: {"model": ChatExchange, "description": "Accepted; the reply is still being written"},
        **problem_responses(400, 401, 404, 409, 413, 415, 422, 429),
    },
)
async def send_chat(
    deployment_id: uuid.UUID,
    body: ChatRequest,
    request: Request,
    user: CurrentUser,
    db: UserSession,
    state: State,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Send a message; the reply comes back blocking (default), streamed (SSE) or async (202)."""
    mode = body.mode or (
        ChatMode.STREAMING if accept and "text/event-stream" in accept else ChatMode.BLOCKING
    )
    sent = await chat.send_message(
        db=db,
        user=user,
        deployment_id=deployment_id,
        request=body,
        mode=mode,
        # The job continues this request's trace (its Sentry trace, else its request id).
        trace_id=sentry.traceparent() or getattr(request.state, "request_id", None),
        hub=state.hub,
        settings=state.settings,
        slots=state.stream_slots,
    )
    exchange = sent.exchange
    if sent.stream is not None:
        return reply_response(exchange.assistant_message.id, sent.stream, headers=sent.headers)
    done = exchange.assistant_message.status.finished
    return JSONResponse(
        exchange.model_dump(mode="json"),
        status_code=status.HTTP_200_OK if done else status.HTTP_202_ACCEPTED,
        headers=sent.headers,
    )


@router.get(
    "/api/agents/{deployment_id}/conversations",
    response_model=ConversationList,
    responses=problem_responses(401, 404, 422),
)
async def list_conversations(
    db: UserSession,
    deployment_id: uuid.UUID,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ConversationList:
    """Your conversations with this deployment, most recent first."""
    return await chat.list_conversations(
        db=db, deployment_id=deployment_id, cursor=cursor, limit=limit
    )


@router.post(
    "/api/agents/{deployment_id}/conversations",
    response_model=Conversation,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, 404, 415, 422, 429),
)
async def create_conversation(
    db: UserSession, deployment_id: uuid.UUID, body: NewConversation
) -> Conversation:
    """Start an empty conversation (sending a message without one also starts one)."""
    return await chat.create_conversation(db=db, deployment_id=deployment_id, request=body)


@router.get(
    "/api/agents/{deployment_id}/conversations/{conversation_id}",
    response_model=ConversationDetail,
    responses=problem_responses(401, 404, 422),
)
async def get_conversation(
    db: UserSession,
    deployment_id: uuid.UUID,
    conversation_id: uuid.UUID,
    settings: AppSettings,
    before: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ConversationDetail:
    """The conversation with its latest messages (oldest first); page back with `before`. A page
    is cut short to MAX_PAGE_BYTES of message content (never below one message)."""
    return await chat.get_conversation(
        db=db,
        deployment_id=deployment_id,
        conversation_id=conversation_id,
        before=before,
        limit=limit,
        max_page_bytes=settings.max_page_bytes,
    )


@router.get(
    "/api/agents/{deployment_id}/conversations/{conversation_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "model": ConversationExport,
            "content": {"application/json": {}, "text/markdown": {}},
            "description": "The whole conversation, as an attachment (streamed)",
        },
        **problem_responses(401, 404, 422),
    },
)
async def export_conversation(
    db: UserSession,
    deployment_id: uuid.UUID,
    conversation_id: uuid.UUID,
    settings: AppSettings,
    format: Annotated[ExportFormat, Query(description="json or md (a Markdown transcript)")] = (
        "json"
    ),
) -> StreamingResponse:
    """The whole conversation with every message, oldest first, as a download: JSON
    (`{conversation, messages}`, messages as everywhere else) or a Markdown transcript."""
    exported = await export.open_export(  # 404 before anything is sent
        db=db,
        deployment_id=deployment_id,
        conversation_id=conversation_id,
        max_part_bytes=settings.max_page_bytes,
    )
    media_type = "text/markdown; charset=utf-8" if format == "md" else "application/json"
    return StreamingResponse(
        exported.chunks(format),
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{exported.filename(format)}"',
            "Cache-Control": "no-store",
        },
    )


@router.delete(
    "/api/agents/{deployment_id}/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
async def delete_conversation(
    db: UserSession, deployment_id: uuid.UUID, conversation_id: uuid.UUID
) -> Response:
    """Delete the conversation and its messages."""
    await chat.delete_conversation(
        db=db, deployment_id=deployment_id, conversation_id=conversation_id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/api/messages/{message_id}", response_model=Message, responses=problem_responses(401, 404, 422)
)
async def get_message(db: UserSession, message_id: uuid.UUID) -> Message:
    """One of your messages (poll a reply's status here)."""
    return await chat.get_message(db=db, message_id=message_id)


@router.get(
    "/api/messages/{message_id}/stream",
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "SSE: the reply as it is written",
        },
        **problem_responses(401, 404, 422, 429),
    },
)
async def stream_message(
    message_id: uuid.UUID,
    db: UserSession,
    user: CurrentUser,
    state: State,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """(Re)attach to a reply's stream; with Last-Event-ID it resumes without gaps or repeats."""
    events = await replies.open_reply_stream(  # 429 or 404 before the stream starts
        db=db,
        hub=state.hub,
        slots=state.stream_slots,
        user_id=user.id,
        message_id=message_id,
        last_event_id=last_event_id,
        ping_interval=state.settings.sse_ping_seconds,
    )
    return reply_response(message_id, events)


@router.post(
    "/api/messages/{message_id}/cancel",
    response_model=Message,
    responses=problem_responses(401, 404, 422),
)
async def cancel_message(message_id: uuid.UUID, db: UserSession, state: State) -> Message:
    """Stop a reply: a queued one is cancelled at once, a running one between chunks (its
    partial text is kept). Returns the message; poll or stream it to see the final state."""
    return await chat.cancel_message(db=db, hub=state.hub, message_id=message_id)


@router.post(
    "/api/messages/{message_id}/feedback",
    response_model=Feedback,
    responses=problem_responses(401, 404, 415, 422),
)
async def message_feedback(
    db: UserSession, message_id: uuid.UUID, body: FeedbackRequest
) -> Feedback:
    """Like or dislike a reply (null withdraws it), with an optional comment."""
    return await chat.set_feedback(db=db, message_id=message_id, request=body)
