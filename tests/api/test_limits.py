"""Chat sends under the limits the database enforces: the user's and the deployment's GCRA rates,
replies in flight, the platform-key token budget. Refusals are 429 problem+json with Retry-After
and RateLimit headers and leave nothing behind; accepted sends carry the RateLimit headers; a
repeated client_message_id is free. (No worker runs here: replies stay queued.)"""

from __future__ import annotations

import re
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from agentmarket.ops import migrate
from tests.api.conftest import Caller

pytestmark = pytest.mark.db

RATE_LIMIT = re.compile(r'^"(?P<policy>[a-z_]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def limits(conn: psycopg.Connection, **values: int) -> None:
    migrate.store_settings(conn, **values)


async def deploy(client: httpx.AsyncClient, who: Caller, agent: str = "sql-sidekick") -> str:
    response = await client.post(
        "/api/marketplace/deploy", json={"agent_id": agent, "config": {}}, headers=who.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def send(
    client: httpx.AsyncClient, who: Caller, deployment: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/api/agents/{deployment}/chat",
        json={"message": "hello", "mode": "async", **body},
        headers=who.headers,
    )


def counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    row = conn.execute(
        "select (select count(*) from public.agent_messages),"
        " (select count(*) from public.agent_conversations),"
        " (select count(*) from private.chat_jobs)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def rejections(limit: str) -> float:
    return REGISTRY.get_sample_value("ratelimit_rejections_total", {"limit": limit}) or 0.0


def assert_refused(response: httpx.Response, code: str, policy: str) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == 429
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    state = RATE_LIMIT.match(response.headers["RateLimit"])
    assert state is not None, response.headers["RateLimit"]
    assert state["policy"] == policy
    assert int(state["r"]) == 0
    assert response.headers["RateLimit-Policy"].startswith(f'"{policy}";q=')
    return retry_after


async def test_a_burst_of_the_limit_then_429_with_headers_and_nothing_stored(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, chat_per_minute=5, max_in_flight_per_user=100)
    deployment = await deploy(client, alice)
    remaining = []
    for _ in range(5):
        response = await send(client, alice, deployment)
        assert response.status_code == 202, response.text
        assert response.headers["RateLimit-Policy"] == '"chat";q=5;w=60'
        state = RATE_LIMIT.match(response.headers["RateLimit"])
        assert state is not None
        remaining.append(int(state["r"]))
    assert remaining == [4, 3, 2, 1, 0]
    before = counts(conn)
    refused_before = rejections("chat")
    with capture_logs() as logs:
        refused = await send(client, alice, deployment)
    retry_after = assert_refused(refused, "rate_limited", "chat")
    # 5 per minute: one more every 12 s.
    assert 1 <= retry_after <= 12
    assert refused.headers["RateLimit-Policy"] == '"chat";q=5;w=60'
    assert counts(conn) == before
    assert rejections("chat") == refused_before + 1
    [line] = [entry for entry in logs if entry["event"] == "limit.rejected"]
    assert line["limit"] == "chat"
    assert line["retry_after"] == str(retry_after)
    assert "hello" not in repr(line)


async def test_another_user_is_not_held_to_the_first_users_limit(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, chat_per_minute=2, max_in_flight_per_user=100)
    mine, theirs = await deploy(client, alice), await deploy(client, bob)
    for _ in range(2):
        assert (await send(client, alice, mine)).status_code == 202
    assert (await send(client, alice, mine)).status_code == 429
    response = await send(client, bob, theirs)
    assert response.status_code == 202
    assert response.headers["RateLimit"].startswith('"chat";r=1;')


async def test_an_agents_lower_rate_caps_its_deployments(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, chat_per_minute=20, max_in_flight_per_user=100)
    conn.execute(
        "update public.marketplace_agents set rate_limit_per_minute = 2 where slug = 'sql-sidekick'"
    )
    slow, other = await deploy(client, alice), await deploy(client, alice, "focus-planner")
    first = await send(client, alice, slow)
    # The tighter quota is the one reported.
    assert first.headers["RateLimit-Policy"] == '"deployment";q=2;w=60'
    assert first.headers["RateLimit"].startswith('"deployment";r=1;')
    assert (await send(client, alice, slow)).status_code == 202
    before = counts(conn)
    refused = await send(client, alice, slow)
    retry_after = assert_refused(refused, "rate_limited", "deployment")
    assert retry_after <= 30
    assert counts(conn) == before
    # The user's own quota was not spent by the refused send (the transaction rolled back).
    accepted = await send(client, alice, other)
    assert accepted.status_code == 202
    assert accepted.headers["RateLimit"].startswith('"chat";r=17;')


async def test_replies_in_flight_are_capped_until_one_finishes(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, max_in_flight_per_user=2)
    deployment = await deploy(client, alice)
    replies = []
    for _ in range(2):
        response = await send(client, alice, deployment)
        assert response.status_code == 202
        replies.append(response.json()["assistant_message"]["id"])
    before = counts(conn)
    refused = await send(client, alice, deployment)
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_in_flight"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == '"in_flight";q=2'
    assert counts(conn) == before
    conn.execute(
        "update public.agent_messages set status = 'completed', completed_at = now() where id = %s",
        (replies[0],),
    )
    assert (await send(client, alice, deployment)).status_code == 202


async def test_a_repeated_client_message_id_is_free_after_the_limit(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, chat_per_minute=2, max_in_flight_per_user=100)
    deployment = await deploy(client, alice)
    first = await send(client, alice, deployment, client_message_id="retry-me")
    assert first.status_code == 202
    assert (await send(client, alice, deployment)).status_code == 202
    assert (await send(client, alice, deployment)).status_code == 429
    before = counts(conn)
    again = await send(client, alice, deployment, client_message_id="retry-me")
    assert again.status_code == 202, again.text
    assert again.json()["user_message"]["id"] == first.json()["user_message"]["id"]
    assert again.headers["RateLimit"].startswith('"chat";r=0;')
    assert counts(conn) == before


def finish_with_tokens(
    conn: psycopg.Connection, sent: httpx.Response, prompt: int, completion: int
) -> int:
    """Finish the send's reply with these tokens (as the worker would); the user's platform-key
    tokens counted today."""
    reply = sent.json()["assistant_message"]
    conn.execute(
        "update public.agent_messages set status = 'completed', prompt_tokens = %s,"
        " completion_tokens = %s, completed_at = now() where id = %s",
        (prompt, completion, reply["id"]),
    )
    row = conn.execute(
        "select coalesce(sum(u.tokens), 0)::int from private.platform_token_usage u"
        " join public.agent_messages m on m.user_id = u.user_id where m.id = %s",
        (reply["id"],),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_the_platform_token_budget_spares_own_keys(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, platform_tokens_per_day=100, max_in_flight_per_user=100)
    platform, own = await deploy(client, alice), await deploy(client, alice)
    conn.execute(
        "insert into private.deployment_secrets (deployment_id, field, key_id, ciphertext, hint)"
        " values (%s, 'openai_api_key', 'k1', '\\x00', 'sk-…abcd')",
        (own,),
    )
    accepted = await send(client, alice, platform)
    assert accepted.status_code == 202
    # The reply finishes with 60 + 40 tokens on the platform key: the budget is spent.
    assert finish_with_tokens(conn, accepted, 60, 40) == 100
    before = counts(conn)
    refused = await send(client, alice, platform)
    retry_after = assert_refused(refused, "token_budget_exhausted", "platform_tokens")
    assert retry_after <= 86_400
    seconds_to_midnight = conn.execute(
        "select ceil(extract(epoch from (date_trunc('day', now() at time zone 'utc')"
        " + interval '1 day' - (now() at time zone 'utc'))))::int"
    ).fetchone()
    assert seconds_to_midnight is not None
    assert abs(retry_after - seconds_to_midnight[0]) <= 2
    assert counts(conn) == before
    own_key = await send(client, alice, own)
    assert own_key.status_code == 202
    # Tokens answered with the user's own key are not counted.
    assert finish_with_tokens(conn, own_key, 500, 500) == 100


async def test_a_budget_of_zero_is_unlimited(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    limits(conn, platform_tokens_per_day=0, max_in_flight_per_user=100)
    conn.execute(
        "insert into private.platform_token_usage (user_id, day, tokens)"
        " values (%s, (now() at time zone 'utc')::date, 10000000)",
        (alice.user.id,),
    )
    assert (await send(client, alice, await deploy(client, alice))).status_code == 202
