"""A chat send in the service (agentmarket.services.chat): one statement as the caller that
stores, records and answers with both messages, a streaming send subscribed to its reply before
that statement runs, a repeated send following the original reply
(docs/architecture.md#the-path-of-a-chat-message). (No worker runs here: replies stay queued.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from agentmarket.core.auth import User
from agentmarket.db.caller import CallerSession
from agentmarket.domain.models import ChatMode, ChatRequest
from agentmarket.services import chat
from agentmarket.services.replies import ReplyCreated
from tests.api.conftest import Caller

pytestmark = pytest.mark.db


def user(caller: Caller) -> User:
    claims = {"sub": str(caller.user.id), "role": "authenticated"}
    return User(id=caller.user.id, email=None, role="authenticated", is_admin=False, claims=claims)


@pytest.fixture
async def deployment(client: httpx.AsyncClient, alice: Caller) -> uuid.UUID:
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {}},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


class Recording(CallerSession):
    """A caller session that records each `run` and the messages the hub was subscribed to as
    it ran, and fails on a request transaction (the send needs none)."""

    def __init__(self, app: FastAPI, caller: Caller) -> None:
        super().__init__(app.state.agentmarket.pool, user(caller).claims)
        self.hub = app.state.agentmarket.hub
        self.runs: list[tuple[str, set[uuid.UUID]]] = []

    async def run(self, statement: str, params: Any) -> list[dict[str, Any]]:
        self.runs.append((statement, set(self.hub._subscribers)))
        return await super().run(statement, params)

    async def conn(self) -> psycopg.AsyncConnection:
        raise AssertionError("the send opened a request transaction")


async def send(
    app: FastAPI, db: CallerSession, caller: Caller, deployment: uuid.UUID, **request: Any
) -> chat.Sent:
    state = app.state.agentmarket
    return await chat.send_message(
        db=db,
        user=user(caller),
        deployment_id=deployment,
        request=ChatRequest(message="hello", **request),
        mode=ChatMode.STREAMING,
        trace_id=None,
        hub=state.hub,
        settings=state.settings,
        slots=state.stream_slots,
    )


def events_sent(conn: psycopg.Connection) -> list[tuple[uuid.UUID, dict[str, Any]]]:
    rows = conn.execute(
        "select deployment_id, properties from private.telemetry_events"
        " where name = 'agent.chat.message.sent' order by id"
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


async def first(events: AsyncIterator[Any], n: int) -> list[Any]:
    return [await anext(events) for _ in range(n)]


async def test_a_streaming_send_is_one_statement_subscribed_before_it_runs(
    app: FastAPI, alice: Caller, deployment: uuid.UUID, conn: psycopg.Connection
) -> None:
    db = Recording(app, alice)
    sent = await send(app, db, alice, deployment)
    reply = sent.exchange.assistant_message
    assert (reply.status, reply.content, reply.role) == ("queued", "", "assistant")
    assert sent.exchange.user_message.content == "hello"
    assert sent.headers["RateLimit-Policy"].startswith('"')
    # One statement: the send (nothing read back), run while already subscribed to the reply.
    assert len(db.runs) == 1
    assert reply.id in db.runs[0][1]
    # Stored (committed) as answered.
    row = conn.execute(
        "select status, reply_to from public.agent_messages where id = %s", (reply.id,)
    ).fetchone()
    assert row == ("queued", sent.exchange.user_message.id)
    # Its product event too, in the same transaction (nothing waits for the event sink).
    assert events_sent(conn) == [
        (
            deployment,
            {
                "message_id": str(sent.exchange.user_message.id),
                "conversation_id": str(sent.exchange.conversation_id),
                "message_length": 5,
                "mode": "streaming",
            },
        )
    ]
    assert sent.stream is not None
    events = await first(sent.stream, 2)
    assert [e.message.id for e in events if isinstance(e, ReplyCreated)] == [
        sent.exchange.user_message.id,
        reply.id,
    ]
    assert len(db.runs) == 1  # following a new reply starts from the state the send answered
    await sent.stream.aclose()
    assert app.state.agentmarket.hub._subscribers == {}
    assert app.state.agentmarket.stream_slots.open(alice.user.id) == 0


async def test_a_repeated_send_follows_the_original_reply_as_it_stands(
    app: FastAPI, alice: Caller, deployment: uuid.UUID, conn: psycopg.Connection
) -> None:
    original = await send(app, Recording(app, alice), alice, deployment, client_message_id="c-1")
    assert original.stream is not None
    await original.stream.aclose()
    reply = original.exchange.assistant_message.id
    conn.execute(
        "update public.agent_messages set status = 'running', content = 'so far' where id = %s",
        (reply,),
    )
    db = Recording(app, alice)
    again = await send(app, db, alice, deployment, client_message_id="c-1")
    assert again.exchange.assistant_message.id == reply
    assert (again.exchange.assistant_message.status, again.exchange.assistant_message.content) == (
        "running",
        "so far",
    )
    # The id it proposed is not the reply's: its subscription is given back at once.
    assert set(app.state.agentmarket.hub._subscribers) == set()
    assert again.stream is not None
    events = await first(again.stream, 3)
    # Not a new reply: its state is read (one more statement) and its text so far follows.
    assert len(db.runs) == 2
    assert events[2].kind == "delta" and events[2].text == "so far"
    assert set(app.state.agentmarket.hub._subscribers) == {reply}
    await again.stream.aclose()
    assert app.state.agentmarket.hub._subscribers == {}
    assert conn.execute("select count(*) from public.agent_messages").fetchone() == (2,)
    assert len(events_sent(conn)) == 1  # a repeat is not recorded again
