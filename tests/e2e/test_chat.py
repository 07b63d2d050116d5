from __future__ import annotations

import concurrent.futures
import itertools
import signal
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Stack, deploy, sse_events

pytestmark = [pytest.mark.db, pytest.mark.e2e]

INVALID_KEY = "sk-offline-invalid-key-000000000000"


def wait_message(
    client: httpx.Client, message_id: str, *, until: Any, seconds: float = 30
) -> dict[str, Any]:
    end = time.monotonic() + seconds
    while True:
        message: dict[str, Any] = client.get(f"/api/messages/{message_id}").json()
        if until(message) or time.monotonic() > end:
            return message
        time.sleep(0.05)


def finished(message: dict[str, Any]) -> bool:
    return message["status"] in ("completed", "failed", "cancelled")


def test_three_modes_and_the_conversation_reloads_in_order(stack: Stack) -> None:
    with stack.client("modes@example.com") as client:
        deployment = deploy(client)
        chat = f"/api/agents/{deployment}/chat"

        blocking = client.post(chat, json={"message": "hello there"})
        assert blocking.status_code == 200, blocking.text
        first = blocking.json()
        reply = first["assistant_message"]
        assert reply["status"] == "completed"
        assert reply["content"].startswith("Echo: hello there")
        assert reply["usage"]["completion_tokens"] > 0
        assert reply["ttft_ms"] is not None and reply["latency_ms"] >= reply["ttft_ms"]
        conversation = first["conversation_id"]

        queued = client.post(
            chat, json={"message": "second", "conversation_id": conversation, "mode": "async"}
        )
        assert queued.status_code == 202
        assert queued.json()["assistant_message"]["status"] in ("queued", "running")
        second = wait_message(client, queued.json()["assistant_message"]["id"], until=finished)
        assert second["status"] == "completed"
        assert second["content"].startswith("Echo: second")

        _stream_third_and_replay_it(client, chat, conversation)
        _reload_the_conversation(client, deployment, conversation)


def _stream_third_and_replay_it(client: httpx.Client, chat: str, conversation: str) -> None:
    with client.stream(
        "POST",
        chat,
        json={"message": "third", "conversation_id": conversation},
        headers={"Accept": "text/event-stream"},
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(stream))
    names = [name for _, name, _ in events if name != "ping"]
    assert names[:2] == ["message.created", "message.created"]
    assert names[-1] == "message.completed"
    # Every event but ping carries an id; resuming from message.created's replays it all.
    assert all(event_id for event_id, name, _ in events if name != "ping")
    assert [event_id for event_id, _, _ in events[:2]] == ["0.0", "0.0"]
    deltas = "".join(str(data["delta"]) for _, name, data in events if name == "message.delta")
    final = events[-1][2]["message"]
    assert isinstance(final, dict)
    assert deltas == final["content"]
    assert final["content"].startswith("Echo: third")
    with client.stream(
        "GET", f"/api/messages/{final['id']}/stream", headers={"Last-Event-ID": "0.0"}
    ) as replay:
        replayed = list(sse_events(replay))
    assert (
        "".join(str(d["delta"]) for _, n, d in replayed if n == "message.delta")
        == (final["content"])
    )
    # The model saw the whole conversation: 5 messages + the system prompt.
    assert "turn 3" in final["content"]


def _reload_the_conversation(client: httpx.Client, deployment: str, conversation: str) -> None:
    detail = client.get(f"/api/agents/{deployment}/conversations/{conversation}").json()
    messages = detail["messages"]["data"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "completed"),
        ("assistant", "completed"),
    ] * 3
    assert [m["content"] for m in messages[::2]] == ["hello there", "second", "third"]
    assert detail["message_count"] == 6
    assert detail["title"] == "hello there"

    page = client.get(
        f"/api/agents/{deployment}/conversations/{conversation}", params={"limit": 4}
    ).json()["messages"]
    assert page["has_more"] is True
    older = client.get(
        f"/api/agents/{deployment}/conversations/{conversation}",
        params={"limit": 4, "before": page["next_cursor"]},
    ).json()["messages"]
    assert [m["id"] for m in older["data"] + page["data"]] == [m["id"] for m in messages]
    assert older["has_more"] is False


def test_ten_conversations_at_once(stack: Stack) -> None:
    with stack.client("crowd@example.com") as client:
        deployment = deploy(client)

        def converse(i: int) -> tuple[int, dict[str, Any]]:
            r = client.post(f"/api/agents/{deployment}/chat", json={"message": f"question {i}"})
            return r.status_code, r.json()

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(converse, range(10)))
        assert [code for code, _ in results] == [200] * 10
        for i, (_, body) in enumerate(results):
            assert body["assistant_message"]["content"].startswith(f"Echo: question {i}")
        conversations = client.get(
            f"/api/agents/{deployment}/conversations", params={"limit": 100}
        ).json()
        assert len(conversations["data"]) == 10


def test_a_repeated_client_message_id_is_one_exchange(stack: Stack) -> None:
    with stack.client("retry@example.com") as client:
        deployment = deploy(client)
        body = {"message": "only once please", "client_message_id": "c-123-abc"}
        first = client.post(f"/api/agents/{deployment}/chat", json=body).json()
        again = client.post(f"/api/agents/{deployment}/chat", json=body).json()
        assert again["user_message"]["id"] == first["user_message"]["id"]
        assert again["assistant_message"]["id"] == first["assistant_message"]["id"]
        assert again["conversation_id"] == first["conversation_id"]
    with psycopg.connect(stack.db_url) as conn:
        counts = conn.execute(
            "select count(*) filter (where m.role = 'user'), count(j.id)"
            " from public.agent_messages m left join private.chat_jobs j on j.message_id = m.id"
            " where m.conversation_id = %s",
            (first["conversation_id"],),
        ).fetchone()
    assert counts == (1, 1)


def test_transient_model_errors_retry_1_2_4_seconds_apart(stack: Stack) -> None:
    with stack.client("flaky@example.com") as client:
        deployment = deploy(client)
        marker = uuid.uuid4().hex[:8]
        response = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": f"[[fault:429,500,503]] flaky {marker}"},
        )
        assert response.status_code == 200
        reply = response.json()["assistant_message"]
        assert reply["status"] == "completed"
        assert reply["content"].startswith(f"Echo: flaky {marker}")
    attempts = [
        r for r in stack.offline_requests() if marker in str(r.get("last_user_message", ""))
    ]
    assert [r["outcome"] for r in attempts] == ["429", "500", "503", "ok"]
    starts = [float(str(r["t_monotonic"])) for r in attempts]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, expected in zip(gaps, [1, 2, 4], strict=True):
        assert expected <= gap <= expected + 0.6, gaps


def test_a_rejected_key_fails_at_once_with_invalid_api_key(stack: Stack) -> None:
    def rejected() -> int:
        return sum(1 for r in stack.offline_requests() if r["outcome"] == "401")

    before = rejected()
    with stack.client("badkey@example.com") as client:
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": INVALID_KEY})
        marker = uuid.uuid4().hex[:8]
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": f"hi {marker}"})
        assert response.status_code == 200
        reply = response.json()["assistant_message"]
        assert reply["status"] == "failed"
        assert reply["error"]["code"] == "invalid_api_key"
        assert INVALID_KEY not in response.text
    assert rejected() == before + 1  # one attempt: a rejected key is not retried
    with psycopg.connect(stack.db_url) as conn:
        event = conn.execute(
            "select properties ->> 'error_type', properties ->> 'model_attempts'"
            " from private.telemetry_events"
            " where name = 'agent.chat.error' and properties ->> 'message_id' = %s",
            (reply["id"],),
        ).fetchone()
    assert event == ("invalid_api_key", "1")


def test_cancel_keeps_the_partial_reply(stack: Stack) -> None:
    with stack.client("cancel@example.com") as client:
        deployment = deploy(client)
        sent = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": "[[long:400]] [[tps:40]] tell me everything", "mode": "async"},
        ).json()
        reply_id = sent["assistant_message"]["id"]
        wait_message(client, reply_id, until=lambda m: len(m["content"]) > 20)
        cancelled = client.post(f"/api/messages/{reply_id}/cancel").json()
        assert cancelled["status"] == "cancelled"
        final = wait_message(client, reply_id, until=finished)
        assert final["status"] == "cancelled"
        assert final["content"].startswith("Echo: tell me everything")
        assert len(final["content"].split()) < 400


def test_a_resumed_stream_has_no_gap_and_no_repeat(stack: Stack) -> None:
    with stack.client("resume@example.com") as client:
        deployment = deploy(client)
        first_part: list[str] = []
        last_id = None
        reply_id = None
        with client.stream(
            "POST",
            f"/api/agents/{deployment}/chat",
            json={"message": "[[long:120]] [[tps:60]] stream me", "mode": "streaming"},
        ) as stream:
            for event_id, name, data in sse_events(stream):
                if name == "message.created" and data["message"]["role"] == "assistant":  # type: ignore[index]
                    reply_id = data["message"]["id"]  # type: ignore[index]
                if name == "message.delta":
                    first_part.append(str(data["delta"]))
                    last_id = event_id
                    if len(first_part) >= 5:
                        break
        assert reply_id and last_id
        with client.stream(
            "GET", f"/api/messages/{reply_id}/stream", headers={"Last-Event-ID": last_id}
        ) as resumed:
            events = list(sse_events(resumed))
        rest = "".join(str(d["delta"]) for _, n, d in events if n == "message.delta")
        assert events[-1][1] == "message.completed"
        final = events[-1][2]["message"]
        assert "".join(first_part) + rest == final["content"]  # type: ignore[index]

        # A finished reply replays in full.
        with client.stream("GET", f"/api/messages/{reply_id}/stream") as replay:
            replayed = list(sse_events(replay))
        assert (
            "".join(str(d["delta"]) for _, n, d in replayed if n == "message.delta")
            == (
                final["content"]  # type: ignore[index]
            )
        )


def test_other_users_messages_and_conversations_are_404(stack: Stack) -> None:
    with stack.client("owner@example.com") as owner, stack.client("other@example.com") as other:
        deployment = deploy(owner)
        sent = owner.post(f"/api/agents/{deployment}/chat", json={"message": "mine"}).json()
        reply = sent["assistant_message"]["id"]
        conversation = sent["conversation_id"]
        for method, path, body in [
            ("GET", f"/api/messages/{reply}", None),
            ("GET", f"/api/messages/{reply}/stream", None),
            ("POST", f"/api/messages/{reply}/cancel", None),
            ("POST", f"/api/messages/{reply}/feedback", {"rating": "like"}),
            ("GET", f"/api/agents/{deployment}/conversations", None),
            ("GET", f"/api/agents/{deployment}/conversations/{conversation}", None),
            ("DELETE", f"/api/agents/{deployment}/conversations/{conversation}", None),
            ("POST", f"/api/agents/{deployment}/chat", {"message": "hijack"}),
        ]:
            response = other.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
        liked = owner.post(
            f"/api/messages/{reply}/feedback", json={"rating": "like", "comment": "good"}
        )
        assert liked.json() == {"message_id": reply, "rating": "like", "comment": "good"}
        assert owner.get(f"/api/messages/{reply}").json()["content"].startswith("Echo: mine")


def test_a_conversation_carries_your_ratings_of_its_replies(stack: Stack) -> None:
    with stack.client("rater@example.com") as client:
        deployment = deploy(client)
        first = client.post(f"/api/agents/{deployment}/chat", json={"message": "one"}).json()
        conversation = first["conversation_id"]
        second = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": "two", "conversation_id": conversation},
        ).json()
        one, two = first["assistant_message"]["id"], second["assistant_message"]["id"]
        path = f"/api/agents/{deployment}/conversations/{conversation}"

        def ratings(**params: int) -> list[dict[str, object]]:
            detail = client.get(path, params=params)
            assert detail.status_code == 200, detail.text
            return list(detail.json()["feedback"])

        assert ratings() == []
        client.post(f"/api/messages/{one}/feedback", json={"rating": "like", "comment": "yes"})
        client.post(f"/api/messages/{two}/feedback", json={"rating": "dislike"})
        assert ratings() == [
            {"message_id": one, "rating": "like", "comment": "yes"},
            {"message_id": two, "rating": "dislike", "comment": None},
        ]
        # Only the ratings of the page's replies: the newest two messages are the second turn.
        assert ratings(limit=2) == [{"message_id": two, "rating": "dislike", "comment": None}]
        # Replaced, then withdrawn.
        client.post(f"/api/messages/{two}/feedback", json={"rating": "like"})
        client.post(f"/api/messages/{one}/feedback", json={"rating": None})
        assert ratings() == [{"message_id": two, "rating": "like", "comment": None}]


def test_a_paused_deployment_refuses_messages(stack: Stack) -> None:
    with stack.client("paused@example.com") as client:
        deployment = deploy(client)
        client.patch(f"/api/deployments/{deployment}", json={"status": "paused"})
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": "anyone?"})
        assert response.status_code == 409
        assert response.json()["code"] == "deployment_paused"
        configuring = deploy(client, "code-review-buddy", {})
        response = client.post(f"/api/agents/{configuring}/chat", json={"message": "hi"})
        assert response.json()["code"] == "deployment_not_configured"


def test_a_killed_worker_is_replaced_and_the_reply_is_written_once(stack: Stack) -> None:
    # Only workers of this test run while it does.
    for process in stack.processes:
        if process.name == "worker":
            process.stop()
    first = stack.worker()
    with stack.client("crash@example.com") as client:
        deployment = deploy(client)
        sent = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": "[[long:150]] [[tps:50]] survive this", "mode": "async"},
        ).json()
        reply_id = sent["assistant_message"]["id"]
        wait_message(client, reply_id, until=lambda m: len(m["content"]) > 10)
        first.stop(signal.SIGKILL)
        stack.worker()
        final = wait_message(client, reply_id, until=finished, seconds=60)
        assert final["status"] == "completed"
        assert final["content"].startswith("Echo: survive this")
        assert len(final["content"].split()) > 150
        detail = client.get(
            f"/api/agents/{deployment}/conversations/{sent['conversation_id']}"
        ).json()
        assistants = [m for m in detail["messages"]["data"] if m["role"] == "assistant"]
        assert len(assistants) == 1
    with psycopg.connect(stack.db_url) as conn:
        job = conn.execute(
            "select status, attempts from private.chat_jobs where message_id = %s", (reply_id,)
        ).fetchone()
    assert job == ("completed", 2)


def test_no_message_is_left_queued_or_running_after_its_job_ends(stack: Stack) -> None:
    with psycopg.connect(stack.db_url) as conn:
        stuck = conn.execute(
            "select m.id, m.status, j.status from public.agent_messages m"
            " join private.chat_jobs j on j.message_id = m.id"
            " where j.status in ('completed', 'failed', 'cancelled')"
            "   and m.status in ('queued', 'running')"
        ).fetchall()
    assert stuck == []


def test_a_hung_model_call_times_out_and_is_retried(stack: Stack) -> None:
    with stack.client("hung@example.com") as client:
        deployment = deploy(client)
        marker = uuid.uuid4().hex[:8]
        response = client.post(
            f"/api/agents/{deployment}/chat", json={"message": f"[[fault:timeout]] wait {marker}"}
        )
        reply = response.json()["assistant_message"]
        assert reply["status"] == "completed"
    attempts = [
        r for r in stack.offline_requests() if marker in str(r.get("last_user_message", ""))
    ]
    assert [r["outcome"] for r in attempts] == ["timeout", "ok"]
    gap = float(str(attempts[1]["t_monotonic"])) - float(str(attempts[0]["t_monotonic"]))
    assert 3 <= gap <= 3.8  # the 2 s timeout (OPENAI_TIMEOUT_SECONDS) plus the 1 s backoff


def test_sigterm_finishes_or_hands_back_running_replies(stack: Stack) -> None:
    for process in stack.processes:
        if process.name == "worker":
            process.stop()
    leaving = stack.worker("--grace-seconds", "0.5")
    with stack.client("shutdown@example.com") as client:
        deployment = deploy(client)
        sent = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": "[[long:200]] [[tps:40]] long goodbye", "mode": "async"},
        ).json()
        reply_id = sent["assistant_message"]["id"]
        wait_message(client, reply_id, until=lambda m: len(m["content"]) > 10)
        assert leaving.stop(signal.SIGTERM) == 0  # exits cleanly after the grace period
        with psycopg.connect(stack.db_url) as conn:
            job = conn.execute(
                "select status, attempts, locked_by from private.chat_jobs where message_id = %s",
                (reply_id,),
            ).fetchone()
        assert job == ("queued", 0, None)  # handed back at once, no attempt spent
        stack.worker()
        final = wait_message(client, reply_id, until=finished, seconds=60)
        assert final["status"] == "completed"
        assert final["content"].startswith("Echo: long goodbye")


def test_the_processes_connect_only_as_their_least_privilege_logins(stack: Stack) -> None:
    """API and worker log in as agentmarket_api / agentmarket_worker (never as the operator), so
    every chat test above ran under least privilege."""
    with stack.client("logins@example.com") as client:
        deployment = deploy(client)
        reply = client.post(f"/api/agents/{deployment}/chat", json={"message": "who am I?"})
        assert reply.status_code == 200, reply.text
    with psycopg.connect(stack.db_url) as conn:
        rows = conn.execute(
            "select application_name, array_agg(distinct usename::text)"
            " from pg_stat_activity where datname = current_database()"
            " and application_name like 'agentmarket-%' group by application_name order by 1"
        ).fetchall()
    assert rows == [
        ("agentmarket-api", ["agentmarket_api"]),
        ("agentmarket-api-listen", ["agentmarket_api"]),
        ("agentmarket-worker", ["agentmarket_worker"]),
        ("agentmarket-worker-listen", ["agentmarket_worker"]),
    ]
