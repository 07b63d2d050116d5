"""The caps on what a user could otherwise grow without bound (docs/api.md#limits): open streams
per user (this instance), conversations and deploys per minute, deployments in total, the size of
a knowledge base and of a conversation page. Each: the refusal (status, code, headers), admitted
again where that applies, and nothing stored when refused."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, MutableMapping
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg import sql

from agentmarket.core.config import DEV_JWT_SECRET, Settings, get_settings
from agentmarket.core.metrics import RATE_LIMIT_REJECTIONS
from agentmarket.domain.configschema import knowledge_base_bytes
from agentmarket.ops import migrate
from agentmarket.services.limits import StreamSlots, held
from tests.api.conftest import Caller

pytestmark = pytest.mark.db

STREAMS = 2  # MAX_OPEN_STREAMS_PER_USER here
KB_BYTES = 2048  # MAX_KNOWLEDGE_BASE_BYTES here
PAGE_BYTES = 65_536  # MAX_PAGE_BYTES here (its minimum)


@pytest.fixture
def settings(db_url: str) -> Settings:
    """As tests/api/conftest.py, with small caps; the database's limits generous unless a test
    stores its own (`limit`)."""
    settings = get_settings(
        app_env="test",
        database_url=db_url,
        supabase_url=None,
        supabase_jwt_secret=DEV_JWT_SECRET,
        max_active_deployments=100,
        max_deployments_per_user=100,
        rate_limit_deploy_per_minute=1000,
        rate_limit_conversations_per_minute=1000,
        rate_limit_chat_per_minute=1000,
        max_open_streams_per_user=STREAMS,
        max_knowledge_base_bytes=KB_BYTES,
        max_page_bytes=PAGE_BYTES,
        catalog_cache_seconds=0,
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate.store_settings(conn, **migrate.stored_settings(settings))
    return settings


def limit(conn: psycopg.Connection, **values: int) -> None:
    migrate.store_settings(conn, **values)


def rejections(name: str) -> float:
    value: float = RATE_LIMIT_REJECTIONS.labels(limit=name)._value.get()
    return value


def slots(app: FastAPI) -> StreamSlots:
    held: StreamSlots = app.state.agentmarket.stream_slots
    return held


def later(conn: psycopg.Connection, key: str, seconds: int) -> None:
    """As if `seconds` had passed for a GCRA key (its theoretical arrival time moves back)."""
    conn.execute(
        "update private.rate_limits set tat = tat - make_interval(secs => %s) where key = %s",
        (seconds, key),
    )


async def deploy(
    client: httpx.AsyncClient, caller: Caller, agent: str = "sql-sidekick", **config: Any
) -> httpx.Response:
    return await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": agent, "config": config},
        headers=caller.headers,
    )


async def deployment(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await deploy(client, caller)
    assert response.status_code == 201, response.text
    deployment_id: str = response.json()["id"]
    return deployment_id


def count(conn: psycopg.Connection, table: str, user: Caller) -> int:
    statement = sql.SQL("select count(*) from public.{} where user_id = %s").format(
        sql.Identifier(table)
    )
    row = conn.execute(statement, (user.user.id,)).fetchone()
    assert row is not None
    return int(row[0])


def conversation(conn: psycopg.Connection, caller: Caller, deployment_id: str) -> uuid.UUID:
    row = conn.execute(
        "insert into public.agent_conversations (deployment_id, user_id) values (%s, %s)"
        " returning id",
        (deployment_id, caller.user.id),
    ).fetchone()
    assert row is not None
    conversation_id: uuid.UUID = row[0]
    return conversation_id


def messages(
    conn: psycopg.Connection, caller: Caller, conversation_id: uuid.UUID, sizes: list[int]
) -> list[uuid.UUID]:
    """User messages of `sizes` bytes (2-byte characters), oldest first, a second apart."""
    ids = []
    for n, size in enumerate(sizes):
        content = "é" * (size // 2) + "x" * (size % 2)
        row = conn.execute(
            "insert into public.agent_messages (conversation_id, user_id, role, content, status,"
            " created_at, completed_at) values (%s, %s, 'user', %s, 'completed',"
            " now() - make_interval(secs => %s), now())"
            " returning id",
            (conversation_id, caller.user.id, content, 1000 - n),
        ).fetchone()
        assert row is not None
        ids.append(row[0])
    return ids


def reply(
    conn: psycopg.Connection, caller: Caller, conversation_id: uuid.UUID, *, status: str
) -> uuid.UUID:
    """An assistant reply (completed: its stream replays and ends; queued: it stays open)."""
    (question,) = messages(conn, caller, conversation_id, [10])
    row = conn.execute(
        "insert into public.agent_messages (conversation_id, user_id, role, content, status,"
        " reply_to, completed_at) values (%s, %s, 'assistant', 'hello', %s, %s,"
        " case when %s in ('queued', 'running') then null else now() end) returning id",
        (conversation_id, caller.user.id, status, question, status),
    ).fetchone()
    assert row is not None
    message_id: uuid.UUID = row[0]
    return message_id


def assert_limited(response: httpx.Response, code: str, policy: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Policy"].startswith(f'"{policy}";q=')
    assert response.headers["RateLimit"].startswith(f'"{policy}";r=0;t=')


# --- open streams ------------------------------------------------------------------------------


async def test_a_stream_past_the_cap_is_429_and_closing_one_admits_another(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    message = reply(
        conn, alice, conversation(conn, alice, await deployment(client, alice)), status="completed"
    )
    open_streams = [slots(app).acquire(alice.user.id) for _ in range(STREAMS)]
    before = rejections("streams")

    refused = await client.get(f"/api/messages/{message}/stream", headers=alice.headers)
    assert_limited(refused, "too_many_streams", "streams")
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == f'"streams";q={STREAMS}'
    assert rejections("streams") == before + 1
    # Per user: Bob's 404 is his own business, not Alice's cap.
    assert (
        await client.get(f"/api/messages/{message}/stream", headers=bob.headers)
    ).status_code == 404

    open_streams.pop().release()
    admitted = await client.get(f"/api/messages/{message}/stream", headers=alice.headers)
    assert admitted.status_code == 200
    assert "event: message.completed" in admitted.text
    assert slots(app).open(alice.user.id) == 1  # the finished stream gave its slot back
    open_streams.pop().release()
    assert slots(app).open(alice.user.id) == 0


async def test_a_refused_stream_of_an_unknown_message_holds_no_slot(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller
) -> None:
    for _ in range(STREAMS + 1):
        missing = await client.get(f"/api/messages/{uuid.uuid4()}/stream", headers=alice.headers)
        assert missing.status_code == 404
    assert slots(app).open(alice.user.id) == 0


async def test_a_streaming_send_past_the_cap_is_429_and_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deployment(client, alice)
    held = [slots(app).acquire(alice.user.id) for _ in range(STREAMS)]
    refused = await client.post(
        f"/api/agents/{deployment_id}/chat",
        json={"message": "hello"},
        headers={**alice.headers, "Accept": "text/event-stream"},
    )
    assert_limited(refused, "too_many_streams", "streams")
    assert count(conn, "agent_messages", alice) == 0
    assert count(conn, "agent_conversations", alice) == 0

    # Only streams are capped: an async send still goes through.
    queued = await client.post(
        f"/api/agents/{deployment_id}/chat",
        json={"message": "hello", "mode": "async"},
        headers=alice.headers,
    )
    assert queued.status_code == 202, queued.text
    assert count(conn, "agent_messages", alice) == 2
    for slot in held:
        slot.release()


async def test_a_streaming_send_that_fails_gives_its_slot_back(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller
) -> None:
    deployment_id = await deployment(client, alice)
    paused = await client.patch(
        f"/api/deployments/{deployment_id}", json={"status": "paused"}, headers=alice.headers
    )
    assert paused.status_code == 200
    for _ in range(STREAMS + 1):
        refused = await client.post(
            f"/api/agents/{deployment_id}/chat",
            json={"message": "hello", "mode": "streaming"},
            headers=alice.headers,
        )
        assert refused.json()["code"] == "deployment_paused"
    assert slots(app).open(alice.user.id) == 0


def stream_scope(message: uuid.UUID, caller: Caller) -> dict[str, Any]:
    """An ASGI request for the reply's stream (driven by hand: httpx's test transport waits for
    the whole body, so it cannot leave in the middle)."""
    path = f"/api/messages/{message}/stream"
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", caller.headers["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }


async def test_a_client_that_disconnects_gives_its_slot_back(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    """A reply nobody writes keeps its stream open; the client going away ends it and frees
    the slot."""
    message = reply(
        conn, alice, conversation(conn, alice, await deployment(client, alice)), status="queued"
    )
    started, gone = asyncio.Event(), asyncio.Event()
    sent: list[MutableMapping[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(event: MutableMapping[str, Any]) -> None:
        sent.append(event)
        if event["type"] == "http.response.body" and event.get("body"):
            started.set()

    call = asyncio.create_task(app(stream_scope(message, alice), receive, send))
    await asyncio.wait_for(started.wait(), 10)
    assert sent[0]["status"] == 200
    assert slots(app).open(alice.user.id) == 1
    gone.set()
    await asyncio.wait_for(call, 10)
    assert slots(app).open(alice.user.id) == 0


async def test_a_client_gone_before_the_first_byte_gives_its_slot_back(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    """The client leaves while the status line is being sent: the stream's body is never
    iterated, and the slot still comes back."""
    message = reply(
        conn, alice, conversation(conn, alice, await deployment(client, alice)), status="queued"
    )
    starting = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await starting.wait()
        return {"type": "http.disconnect"}

    async def send(event: MutableMapping[str, Any]) -> None:
        if event["type"] == "http.response.start":
            assert slots(app).open(alice.user.id) == 1
            starting.set()
            await asyncio.Event().wait()  # a client that never reads: only the disconnect ends it

    await asyncio.wait_for(app(stream_scope(message, alice), receive, send), 10)
    assert slots(app).open(alice.user.id) == 0


async def test_a_never_started_stream_gives_its_slot_back(alice: Caller) -> None:
    """Closing a held stream frees its slot even if it never yielded (a client gone before the
    first byte), and only once."""
    cap = StreamSlots(1)

    async def events() -> AsyncGenerator[int, None]:
        yield 1

    stream = held(events(), cap.acquire(alice.user.id))
    assert cap.open(alice.user.id) == 1
    await stream.aclose()
    await stream.aclose()
    assert cap.open(alice.user.id) == 0
    finished = held(events(), cap.acquire(alice.user.id))
    assert [e async for e in finished] == [1]
    assert cap.open(alice.user.id) == 0


# --- conversations per minute ------------------------------------------------------------------


async def test_conversations_past_the_rate_are_429_and_stored_nothing(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deployment(client, alice)
    limit(conn, conversations_per_minute=3)
    url = f"/api/agents/{deployment_id}/conversations"
    for _ in range(3):
        assert (await client.post(url, json={}, headers=alice.headers)).status_code == 201
    before = rejections("conversations")
    refused = await client.post(url, json={"title": "one too many"}, headers=alice.headers)
    assert_limited(refused, "rate_limited", "conversations")
    assert refused.headers["RateLimit-Policy"] == '"conversations";q=3;w=60'
    assert 1 <= int(refused.headers["Retry-After"]) <= 20  # one more every 60 / 3 seconds
    assert rejections("conversations") == before + 1
    assert count(conn, "agent_conversations", alice) == 3

    # A send that starts a conversation is under the chat rate, not this one.
    sent = await client.post(
        f"/api/agents/{deployment_id}/chat",
        json={"message": "hi", "mode": "async"},
        headers=alice.headers,
    )
    assert sent.status_code == 202, sent.text
    assert count(conn, "agent_conversations", alice) == 4

    later(conn, f"conversations:{alice.user.id}", 20)
    assert (await client.post(url, json={}, headers=alice.headers)).status_code == 201
    assert (await client.post(url, json={}, headers=alice.headers)).status_code == 429


async def test_the_conversation_rate_is_per_user(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    mine, theirs = await deployment(client, alice), await deployment(client, bob)
    limit(conn, conversations_per_minute=1)
    ok = await client.post(f"/api/agents/{mine}/conversations", json={}, headers=alice.headers)
    assert ok.status_code == 201
    other = await client.post(f"/api/agents/{theirs}/conversations", json={}, headers=bob.headers)
    assert other.status_code == 201


# --- deploys per minute ------------------------------------------------------------------------


async def test_deploys_and_updates_past_the_rate_are_429_and_change_nothing(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    limit(conn, deploy_per_minute=3)
    first = await deployment(client, alice)
    renamed = await client.patch(
        f"/api/deployments/{first}", json={"name": "renamed"}, headers=alice.headers
    )
    assert renamed.status_code == 200  # an update counts too
    await deployment(client, alice)

    before = rejections("deploy")
    refused = await deploy(client, alice)
    assert_limited(refused, "rate_limited", "deploy")
    assert refused.headers["RateLimit-Policy"] == '"deploy";q=3;w=60'
    assert count(conn, "agent_deployments", alice) == 2
    patch = await client.patch(
        f"/api/deployments/{first}", json={"name": "again"}, headers=alice.headers
    )
    assert_limited(patch, "rate_limited", "deploy")
    assert rejections("deploy") == before + 2
    row = conn.execute("select name from public.agent_deployments where id = %s", (first,))
    assert row.fetchone() == ("renamed",)
    assert (await deploy(client, bob)).status_code == 201  # per user

    later(conn, f"deploy:{alice.user.id}", 20)
    assert (await deploy(client, alice)).status_code == 201
    assert (await deploy(client, alice)).status_code == 429


async def test_an_invalid_config_does_not_take_from_the_deploy_rate(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limit(conn, deploy_per_minute=1)
    invalid = await deploy(client, alice, temperature="hot")
    assert invalid.status_code == 422
    assert (await deploy(client, alice)).status_code == 201


# --- deployments in total ----------------------------------------------------------------------


async def test_deployments_past_the_total_are_409_paused_ones_count_deleted_ones_do_not(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    limit(conn, max_deployments_per_user=3)
    ids = [await deployment(client, alice) for _ in range(3)]
    paused = await client.patch(
        f"/api/deployments/{ids[0]}", json={"status": "paused"}, headers=alice.headers
    )
    assert paused.status_code == 200

    before = rejections("deployments_total")
    refused = await deploy(client, alice)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "deployment_limit"
    assert refused.headers["RateLimit-Policy"] == '"deployments";q=3'
    # Waiting does not help: no Retry-After, no RateLimit state.
    assert "Retry-After" not in refused.headers
    assert "RateLimit" not in refused.headers
    assert rejections("deployments_total") == before + 1
    assert count(conn, "agent_deployments", alice) == 3
    assert (await deploy(client, bob)).status_code == 201  # per user

    deleted = await client.delete(f"/api/deployments/{ids[1]}", headers=alice.headers)
    assert deleted.status_code == 204
    assert (await deploy(client, alice)).status_code == 201
    assert (await deploy(client, alice)).status_code == 409


# --- knowledge base size -----------------------------------------------------------------------


def knowledge_base(size: int) -> list[dict[str, str]]:
    """One article whose knowledge base is exactly `size` bytes as compact UTF-8 JSON."""
    base = knowledge_base_bytes([{"title": "Guide", "content": ""}])
    filler = size - base
    articles = [{"title": "Guide", "content": "é" * (filler // 2) + "x" * (filler % 2)}]
    assert knowledge_base_bytes(articles) == size
    return articles


async def test_a_knowledge_base_over_the_cap_is_422_on_deploy_and_patch(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    agent = "saas-onboarding-guide"
    refused = await deploy(
        client, alice, agent, product_name="P", knowledge_base=knowledge_base(KB_BYTES + 1)
    )
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == "invalid_config"
    assert [e["path"] for e in body["errors"]] == ["/config/knowledge_base"]
    assert str(KB_BYTES) in body["errors"][0]["message"]
    assert count(conn, "agent_deployments", alice) == 0

    fits = knowledge_base(KB_BYTES)
    created = await deploy(client, alice, agent, product_name="P", knowledge_base=fits)
    assert created.status_code == 201, created.text
    deployment_id = created.json()["id"]

    patch = await client.patch(
        f"/api/deployments/{deployment_id}",
        json={"config": {"product_name": "Q", "knowledge_base": knowledge_base(KB_BYTES + 1)}},
        headers=alice.headers,
    )
    assert patch.status_code == 422, patch.text
    assert [e["path"] for e in patch.json()["errors"]] == ["/config/knowledge_base"]
    stored = conn.execute(
        "select config from public.agent_deployments where id = %s", (deployment_id,)
    ).fetchone()
    assert stored is not None
    assert stored[0]["product_name"] == "P"
    assert json.dumps(stored[0]["knowledge_base"]) == json.dumps(fits)


# --- conversation page size --------------------------------------------------------------------


async def test_a_conversation_page_is_cut_to_the_byte_cap_and_the_cursor_goes_on(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deployment(client, alice)
    conversation_id = conversation(conn, alice, deployment_id)
    # 30 000 bytes each: two fit in 64 KiB, three do not; the oldest is bigger than a page.
    ids = messages(conn, alice, conversation_id, [100_000, 30_000, 30_000, 30_000, 30_000, 30_000])
    url = f"/api/agents/{deployment_id}/conversations/{conversation_id}"

    pages: list[list[str]] = []
    params: dict[str, Any] = {}
    while True:
        response = await client.get(url, params=params, headers=alice.headers)
        assert response.status_code == 200
        page = response.json()["messages"]
        pages.append([m["id"] for m in page["data"]])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        params = {"before": page["next_cursor"]}
    assert [len(p) for p in pages] == [2, 2, 1, 1]  # at least one, even over the cap
    assert [m for p in reversed(pages) for m in p] == [str(i) for i in ids]


async def test_a_conversation_page_still_ends_at_its_limit(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deployment(client, alice)
    conversation_id = conversation(conn, alice, deployment_id)
    ids = messages(conn, alice, conversation_id, [10, 10, 10])
    url = f"/api/agents/{deployment_id}/conversations/{conversation_id}"
    first = (await client.get(url, params={"limit": 2}, headers=alice.headers)).json()["messages"]
    assert [m["id"] for m in first["data"]] == [str(i) for i in ids[1:]]
    assert first["has_more"] is True
    rest = await client.get(
        url, params={"limit": 2, "before": first["next_cursor"]}, headers=alice.headers
    )
    assert [m["id"] for m in rest.json()["messages"]["data"]] == [str(ids[0])]
    assert rest.json()["messages"]["has_more"] is False
    whole = (await client.get(url, params={"limit": 3}, headers=alice.headers)).json()
    assert whole["messages"]["has_more"] is False
