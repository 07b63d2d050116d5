"""The deployment `error` state with the real processes (docs/api.md, status lifecycle): a
deployment whose own key the model rejects (the offline model's reject key) ends in `error`;
sends then get 409 `deployment_error` naming the reason; a new key makes it `active` again and
the next send completes. Every failure writes `agent.chat.error` with a scrubbed message."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg

from agentmarket.devtools.offline_model import DEFAULT_REJECT_KEY
from tests.e2e.conftest import Stack, deploy

GOOD_KEY = "sk-offline-good-user-key-000000000000000"


def error_events(stack: Stack, message_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(stack.db_url) as conn:
        rows = conn.execute(
            "select properties ->> 'error_type', properties ->> 'error_message'"
            " from private.telemetry_events"
            " where name = 'agent.chat.error' and properties ->> 'message_id' = %s",
            (message_id,),
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_a_rejected_key_puts_the_deployment_in_error_until_it_is_reconfigured(
    stack: Stack,
) -> None:
    with stack.client("deployment-error@example.com") as client:
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": DEFAULT_REJECT_KEY})
        marker = uuid.uuid4().hex[:8]
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": f"hi {marker}"})
        assert response.status_code == 200, response.text
        reply = response.json()["assistant_message"]
        assert (reply["status"], reply["error"]["code"]) == ("failed", "invalid_api_key")
        [(error_type, error_message)] = error_events(stack, reply["id"])
        assert error_type == "invalid_api_key"
        assert error_message == reply["error"]["message"]
        assert DEFAULT_REJECT_KEY not in error_message

        # The deployment is in error, with the reason, in the API's answers.
        detail = client.get(f"/api/deployments/{deployment}").json()
        assert detail["status"] == "error"
        assert detail["status_reason"].startswith("invalid_api_key: ")
        listed = {d["id"]: d for d in client.get("/api/deployments").json()["data"]}
        assert listed[deployment]["status"] == "error"

        # Further sends are refused, naming the reason; nothing is stored.
        refused = client.post(f"/api/agents/{deployment}/chat", json={"message": "again?"})
        assert refused.status_code == 409
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["code"] == "deployment_error"
        assert "invalid_api_key" in problem["detail"]
        assert DEFAULT_REJECT_KEY not in refused.text

        # Renaming does not clear it.
        renamed = client.patch(f"/api/deployments/{deployment}", json={"name": "renamed"})
        assert renamed.status_code == 200 and renamed.json()["status"] == "error"

        # A new key makes it active again, and the next send completes.
        fixed = client.patch(
            f"/api/deployments/{deployment}", json={"config": {"openai_api_key": GOOD_KEY}}
        )
        assert fixed.status_code == 200, fixed.text
        assert (fixed.json()["status"], fixed.json()["status_reason"]) == ("active", None)
        again = client.post(f"/api/agents/{deployment}/chat", json={"message": f"ok {marker}"})
        assert again.status_code == 200, again.text
        assert again.json()["assistant_message"]["status"] == "completed"


def test_a_key_replaced_during_the_model_call_keeps_the_deployment_active(stack: Stack) -> None:
    """The old key's refusal arrives after its owner saved a new one: the reply fails, the
    deployment (now holding the new key) stays active. Unchanged, the same refusal moves it."""
    with stack.client("deployment-error-race@example.com") as client:
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": GOOD_KEY})
        marker = uuid.uuid4().hex[:8]
        sent = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": f"race {marker} [[latency:1500]] [[fault:401]]", "mode": "async"},
        )
        assert sent.status_code == 202, sent.text
        reply_id = sent.json()["assistant_message"]["id"]
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            for _ in range(500):  # until a worker has claimed it, with the old key
                row = conn.execute(
                    "select status from private.chat_jobs where message_id = %s", (reply_id,)
                ).fetchone()
                if row and row[0] == "running":
                    break
                time.sleep(0.02)
            assert row is not None and row[0] == "running"
        rekeyed = client.patch(
            f"/api/deployments/{deployment}",
            json={"config": {"openai_api_key": GOOD_KEY.replace("good", "next")}},
        )
        assert rekeyed.status_code == 200, rekeyed.text
        message: dict[str, Any] = {}
        for _ in range(200):
            message = client.get(f"/api/messages/{reply_id}").json()
            if message["status"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        assert (message["status"], message["error"]["code"]) == ("failed", "invalid_api_key")
        assert client.get(f"/api/deployments/{deployment}").json()["status"] == "active"

        # The same refusal of the key it holds now moves it to error.
        again = client.post(
            f"/api/agents/{deployment}/chat", json={"message": f"again {marker} [[fault:401]]"}
        )
        assert again.json()["assistant_message"]["error"]["code"] == "invalid_api_key"
        assert client.get(f"/api/deployments/{deployment}").json()["status"] == "error"


def test_a_deployment_in_error_resumes_with_its_stored_config_or_pauses(stack: Stack) -> None:
    with stack.client("deployment-error-resume@example.com") as client:
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": DEFAULT_REJECT_KEY})
        reply = client.post(f"/api/agents/{deployment}/chat", json={"message": "hi"}).json()
        assert reply["assistant_message"]["error"]["code"] == "invalid_api_key"
        assert client.get(f"/api/deployments/{deployment}").json()["status"] == "error"

        paused = client.patch(f"/api/deployments/{deployment}", json={"status": "paused"})
        assert (paused.json()["status"], paused.json()["status_reason"]) == ("paused", None)
        refused = client.post(f"/api/agents/{deployment}/chat", json={"message": "paused?"})
        assert (refused.status_code, refused.json()["code"]) == (409, "deployment_paused")

        resumed = client.patch(f"/api/deployments/{deployment}", json={"status": "active"})
        assert resumed.status_code == 200 and resumed.json()["status"] == "active"
        # Still the rejected key: the next reply puts it back in error.
        reply = client.post(f"/api/agents/{deployment}/chat", json={"message": "and now"}).json()
        assert reply["assistant_message"]["error"]["code"] == "invalid_api_key"
        assert client.get(f"/api/deployments/{deployment}").json()["status"] == "error"
        # Resuming straight from error works too (the stored configuration validated again).
        resumed = client.patch(f"/api/deployments/{deployment}", json={"status": "active"})
        assert resumed.status_code == 200 and resumed.json()["status"] == "active"


def test_a_platform_key_deployment_never_goes_to_error(stack: Stack) -> None:
    with stack.client("deployment-error-platform@example.com") as client:
        deployment = deploy(client)
        response = client.post(
            f"/api/agents/{deployment}/chat", json={"message": "hello [[fault:401]]"}
        )
        reply = response.json()["assistant_message"]
        assert reply["error"]["code"] == "invalid_api_key"
        assert client.get(f"/api/deployments/{deployment}").json()["status"] == "active"
        assert error_events(stack, reply["id"])[0][0] == "invalid_api_key"


def test_a_reply_lost_by_its_workers_has_an_error_event(stack: Stack) -> None:
    """worker_lost: the claim fails a reply whose lease expired with no attempts left, and
    writes its agent.chat.error in the same transaction."""
    with stack.client("deployment-error-lost@example.com") as client:
        deployment = deploy(client)
        sent = client.post(
            f"/api/agents/{deployment}/chat",
            json={"message": "slow [[long:100000]] [[tps:5]]", "mode": "async"},
        )
        assert sent.status_code == 202, sent.text
        reply_id = sent.json()["assistant_message"]["id"]
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            # Wait until a worker holds it, then make its lease look expired and spent.
            for _ in range(100):
                row = conn.execute(
                    "select status from private.chat_jobs where message_id = %s", (reply_id,)
                ).fetchone()
                if row and row[0] == "running":
                    break
                time.sleep(0.1)
            conn.execute(
                "update private.chat_jobs set max_attempts = attempts,"
                " locked_by = 'a-dead-worker', locked_until = now() - interval '1 second'"
                " where message_id = %s",
                (reply_id,),
            )
        message: dict[str, Any] = {}
        for _ in range(100):
            message = client.get(f"/api/messages/{reply_id}").json()
            if message["status"] == "failed":
                break
            time.sleep(0.1)
        assert message["error"]["code"] == "worker_lost"
        assert [t for t, _ in error_events(stack, reply_id)] == ["worker_lost"]
