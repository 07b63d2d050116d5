"""GET /api/me/usage: the caller's limits and where they stand, in numbers that agree with what
the test did (sends, deploys, pauses, deletes, tokens), for the caller alone."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from agentmarket.core.config import Settings
from tests.api.conftest import Caller
from tests.api.test_errors import assert_problem

pytestmark = pytest.mark.db

# A slow chat quota (one message every 10 s), so the quota the test takes cannot refill between
# the sends and the read, however slow the machine.
CHAT_PER_MINUTE = 6
SENT = 3


async def deploy(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {"persona_name": "Ada"}},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "active"
    deployment_id: str = response.json()["id"]
    return deployment_id


async def usage(client: httpx.AsyncClient, caller: Caller) -> dict[str, dict[str, int]]:
    response = await client.get("/api/me/usage", headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, dict[str, int]] = response.json()
    return body


async def test_the_numbers_agree_with_what_the_caller_did(
    client: httpx.AsyncClient,
    alice: Caller,
    bob: Caller,
    conn: psycopg.Connection,
    settings: Settings,
) -> None:
    conn.execute("update private.app_settings set chat_per_minute = %s", (CHAT_PER_MINUTE,))
    chatting, paused, deleted = [await deploy(client, alice) for _ in range(3)]
    response = await client.patch(
        f"/api/deployments/{paused}", json={"status": "paused"}, headers=alice.headers
    )
    assert response.status_code == 200, response.text
    response = await client.delete(f"/api/deployments/{deleted}", headers=alice.headers)
    assert response.status_code == 204, response.text

    replies = []
    for n in range(SENT):
        sent = await client.post(
            f"/api/agents/{chatting}/chat",
            json={"message": f"question {n}", "mode": "async"},
            headers=alice.headers,
        )
        assert sent.status_code == 202, sent.text
        replies.append(sent.json()["assistant_message"]["id"])

    # Platform-key tokens earlier today, then the worker's part, done by hand: one reply finishes
    # with its usage (its tokens are added to today's count by the database's trigger).
    conn.execute(
        "insert into private.platform_token_usage (user_id, day, tokens)"
        " values (%s, (now() at time zone 'utc')::date, 1234)",
        (alice.user.id,),
    )
    conn.execute(
        "update public.agent_messages set status = 'completed', content = 'done',"
        " completed_at = now(), prompt_tokens = 11, completion_tokens = 22 where id = %s",
        (replies[0],),
    )

    body = await usage(client, alice)

    chat = body["chat"]
    assert (chat["limit"], chat["remaining"]) == (CHAT_PER_MINUTE, CHAT_PER_MINUTE - SENT)
    # Whole again SENT emissions (10 s each) after the first send, less the time since.
    assert (SENT - 1) * 10 < chat["reset_seconds"] <= SENT * 10
    assert body["in_flight"] == {
        "limit": settings.chat_max_in_flight_per_user,
        "current": SENT - 1,
    }
    assert body["deployments"] == {
        "active": 1,
        "active_limit": settings.max_active_deployments,
        "total": 2,
        "total_limit": settings.max_deployments_per_user,
    }
    assert body["platform_tokens"] == {
        "used_today": 1234 + 11 + 22,
        "budget_per_day": settings.platform_tokens_per_user_per_day,
    }
    assert body["month"] == {"messages": SENT, "prompt_tokens": 11, "completion_tokens": 22}

    assert await usage(client, bob) == {
        "chat": {"limit": CHAT_PER_MINUTE, "remaining": CHAT_PER_MINUTE, "reset_seconds": 0},
        "in_flight": {"limit": settings.chat_max_in_flight_per_user, "current": 0},
        "deployments": {
            "active": 0,
            "active_limit": settings.max_active_deployments,
            "total": 0,
            "total_limit": settings.max_deployments_per_user,
        },
        "platform_tokens": {
            "used_today": 0,
            "budget_per_day": settings.platform_tokens_per_user_per_day,
        },
        "month": {"messages": 0, "prompt_tokens": 0, "completion_tokens": 0},
    }


async def test_reading_takes_nothing_from_the_quota(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    conn.execute("update private.app_settings set chat_per_minute = %s", (CHAT_PER_MINUTE,))
    for _ in range(CHAT_PER_MINUTE + 2):
        body = await usage(client, alice)
        assert (body["chat"]["remaining"], body["chat"]["reset_seconds"]) == (CHAT_PER_MINUTE, 0)
    stored = conn.execute(
        "select count(*) from private.rate_limits where key = %s", (f"chat:{alice.user.id}",)
    ).fetchone()
    assert stored == (0,)


async def test_configuring_deployments_count_toward_the_active_cap(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "code-review-buddy", "config": {}},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "configuring"
    deployments = (await usage(client, alice))["deployments"]
    assert (deployments["active"], deployments["total"]) == (1, 1)


async def test_signed_out_is_401(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/me/usage"), 401, "unauthorized")
