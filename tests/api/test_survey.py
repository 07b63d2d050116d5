"""The satisfaction survey: POST /api/marketplace/survey (one answer per user and deployment, one
general answer per user; answering again changes it) and GET /api/marketplace/survey (answered?
ask now?), with its `marketplace.survey.submitted` event (never the comment's text)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import Caller
from tests.api.test_errors import assert_problem

pytestmark = pytest.mark.db

URL = "/api/marketplace/survey"
SECRET_COMMENT = "my private opinion: the pricing page is confusing"


async def deploy(client: httpx.AsyncClient, caller: Caller) -> str:
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {}},
        headers=caller.headers,
    )
    assert response.status_code == 201, response.text
    deployment_id: str = response.json()["id"]
    return deployment_id


def answer(**overrides: Any) -> dict[str, Any]:
    return {"satisfaction": 4, "ease_of_use": 5, "likelihood_to_recommend": 9, **overrides}


def rows(conn: psycopg.Connection, caller: Caller) -> list[tuple[Any, ...]]:
    return conn.execute(
        "select deployment_id, satisfaction, ease_of_use, likelihood_to_recommend, comment"
        " from public.survey_responses where user_id = %s order by created_at, id",
        (caller.user.id,),
    ).fetchall()


def pointers(response: httpx.Response) -> list[str]:
    body = assert_problem(response, 422, "validation_failed")
    errors: list[dict[str, str]] = body["errors"]  # type: ignore[assignment]
    return sorted(e["path"] for e in errors)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (answer(satisfaction=0), ["/satisfaction"]),
        (answer(satisfaction=6), ["/satisfaction"]),
        (answer(ease_of_use=0), ["/ease_of_use"]),
        (answer(ease_of_use=6), ["/ease_of_use"]),
        (answer(likelihood_to_recommend=-1), ["/likelihood_to_recommend"]),
        (answer(likelihood_to_recommend=11), ["/likelihood_to_recommend"]),
        (answer(satisfaction="5"), ["/satisfaction"]),
        (answer(satisfaction=4.5), ["/satisfaction"]),
        (answer(satisfaction=True), ["/satisfaction"]),
        (answer(comment="x" * 2001), ["/comment"]),
        (answer(deployment_id="not-a-uuid"), ["/deployment_id"]),
        (answer(extra=1), ["/extra"]),
        ({"comment": "no scores"}, ["/ease_of_use", "/likelihood_to_recommend", "/satisfaction"]),
        (
            answer(satisfaction=9, ease_of_use=-3, likelihood_to_recommend=42),
            ["/ease_of_use", "/likelihood_to_recommend", "/satisfaction"],
        ),
    ],
)
async def test_invalid_answers_are_422_with_a_pointer_per_field(
    client: httpx.AsyncClient,
    alice: Caller,
    conn: psycopg.Connection,
    body: dict[str, Any],
    expected: list[str],
) -> None:
    response = await client.post(URL, json=body, headers=alice.headers)
    assert pointers(response) == expected
    assert rows(conn, alice) == []


async def test_the_edges_of_every_range_are_accepted(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    low = await client.post(
        URL,
        json={"satisfaction": 1, "ease_of_use": 1, "likelihood_to_recommend": 0, "comment": ""},
        headers=alice.headers,
    )
    assert low.status_code == 201, low.text
    high = await client.post(
        URL,
        json=answer(satisfaction=5, likelihood_to_recommend=10, comment="x" * 2000),
        headers=alice.headers,
    )
    assert high.status_code == 200, high.text
    assert rows(conn, alice) == [(None, 5, 5, 10, "x" * 2000)]


async def test_answering_twice_keeps_one_row_and_changes_it(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deploy(client, alice)

    first = await client.post(URL, json=answer(comment="good"), headers=alice.headers)
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["deployment_id"] is None
    assert (created["satisfaction"], created["comment"]) == (4, "good")
    assert created["updated_at"] == created["created_at"]

    second = await client.post(
        URL, json=answer(satisfaction=2, likelihood_to_recommend=3), headers=alice.headers
    )
    assert second.status_code == 200, second.text
    changed = second.json()
    assert changed["id"] == created["id"]
    assert changed["created_at"] == created["created_at"]
    assert changed["updated_at"] > created["updated_at"]
    assert (changed["satisfaction"], changed["likelihood_to_recommend"]) == (2, 3)
    assert changed["comment"] is None  # an answer replaces the whole answer
    assert rows(conn, alice) == [(None, 2, 5, 3, None)]

    # About a deployment: an answer of its own, also one only.
    about = await client.post(URL, json=answer(deployment_id=deployment_id), headers=alice.headers)
    assert about.status_code == 201, about.text
    again = await client.post(
        URL, json=answer(deployment_id=deployment_id, ease_of_use=1), headers=alice.headers
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == about.json()["id"]
    assert rows(conn, alice) == [
        (None, 2, 5, 3, None),
        (uuid.UUID(deployment_id), 4, 1, 9, None),
    ]


async def test_another_users_or_a_deleted_or_unknown_deployment_is_404(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    bobs = await deploy(client, bob)
    response = await client.post(URL, json=answer(deployment_id=bobs), headers=alice.headers)
    assert_problem(response, 404, "deployment_not_found")

    unknown = str(uuid.uuid4())
    response = await client.post(URL, json=answer(deployment_id=unknown), headers=alice.headers)
    assert_problem(response, 404, "deployment_not_found")

    alices = await deploy(client, alice)
    deleted = await client.delete(f"/api/deployments/{alices}", headers=alice.headers)
    assert deleted.status_code == 204, deleted.text
    response = await client.post(URL, json=answer(deployment_id=alices), headers=alice.headers)
    assert_problem(response, 404, "deployment_not_found")

    assert rows(conn, alice) == []
    assert rows(conn, bob) == []
    assert conn.execute(
        "select count(*) from private.telemetry_events where name = 'marketplace.survey.submitted'"
    ).fetchone() == (0,)


async def test_anonymous_callers_are_401(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(URL, json=answer()), 401, "unauthorized")
    assert_problem(await client.get(URL), 401, "unauthorized")


async def test_the_event_carries_the_scores_never_the_comment(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    deployment_id = await deploy(client, alice)
    for body in (
        answer(deployment_id=deployment_id, comment=SECRET_COMMENT),
        answer(deployment_id=deployment_id, satisfaction=1),
    ):
        response = await client.post(URL, json=body, headers=alice.headers)
        assert response.status_code in (200, 201), response.text

    events = conn.execute(
        "select e.user_id, e.agent_id, e.deployment_id, e.properties, e.properties::text"
        "  from private.telemetry_events e"
        " where e.name = 'marketplace.survey.submitted' order by e.id"
    ).fetchall()
    agent = conn.execute(
        "select agent_id from public.agent_deployments where id = %s", (deployment_id,)
    ).fetchone()
    assert agent is not None
    assert [(e[0], e[1], str(e[2])) for e in events] == [
        (alice.user.id, agent[0], deployment_id),
        (alice.user.id, agent[0], deployment_id),
    ]
    assert [e[3] for e in events] == [
        {
            "satisfaction": 4,
            "ease_of_use": 5,
            "likelihood_to_recommend": 9,
            "has_comment": True,
            "replaced": False,
        },
        {
            "satisfaction": 1,
            "ease_of_use": 5,
            "likelihood_to_recommend": 9,
            "has_comment": False,
            "replaced": True,
        },
    ]
    assert all("pricing page" not in e[4] for e in events)


async def status(client: httpx.AsyncClient, caller: Caller) -> dict[str, Any]:
    response = await client.get(URL, headers=caller.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def reply(conn: psycopg.Connection, caller: Caller, deployment_id: str, *, status: str) -> None:
    """A conversation with a user message and an assistant reply in `status`."""
    row = conn.execute(
        "insert into public.agent_conversations (deployment_id, user_id) values (%s, %s)"
        " returning id",
        (deployment_id, caller.user.id),
    ).fetchone()
    assert row is not None
    finished = status in ("completed", "failed", "cancelled")
    question = conn.execute(
        "insert into public.agent_messages (conversation_id, user_id, role, content, status)"
        " values (%s, %s, 'user', 'hi', 'completed') returning id",
        (row[0], caller.user.id),
    ).fetchone()
    assert question is not None
    conn.execute(
        "insert into public.agent_messages (conversation_id, user_id, role, content, status,"
        " reply_to, error_code, completed_at) values"
        " (%(c)s, %(u)s, 'assistant', 'hello', %(s)s, %(q)s,"
        "  case when %(s)s = 'failed' then 'model_error' end,"
        "  case when %(f)s then now() end)",
        {"c": row[0], "u": caller.user.id, "s": status, "q": question[0], "f": finished},
    )


async def test_the_client_is_told_to_ask_after_the_first_completed_reply_once(
    client: httpx.AsyncClient, alice: Caller, bob: Caller, conn: psycopg.Connection
) -> None:
    assert await status(client, alice) == {
        "answered": False,
        "answered_at": None,
        "should_ask": False,
    }
    deployment_id = await deploy(client, alice)
    reply(conn, alice, deployment_id, status="failed")
    reply(conn, alice, deployment_id, status="queued")
    assert (await status(client, alice))["should_ask"] is False  # nothing completed yet

    # Bob's completed reply is not Alice's.
    bobs = await deploy(client, bob)
    reply(conn, bob, bobs, status="completed")
    assert (await status(client, alice))["should_ask"] is False
    assert (await status(client, bob))["should_ask"] is True

    reply(conn, alice, deployment_id, status="completed")
    assert await status(client, alice) == {
        "answered": False,
        "answered_at": None,
        "should_ask": True,
    }

    answered = await client.post(URL, json=answer(), headers=alice.headers)
    assert answered.status_code == 201, answered.text
    after = await status(client, alice)
    assert after == {
        "answered": True,
        "answered_at": answered.json()["updated_at"],
        "should_ask": False,
    }
    assert (await status(client, bob))["answered"] is False
