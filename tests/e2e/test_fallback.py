"""The fallback model with the real processes (docs/operations.md#the-fallback-model): a primary
offline model that always answers 503 and a second offline model as the fallback. A reply on the
platform key is completed by the fallback and says so; a reply on a user's own key fails and the
fallback never hears of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Stack, deploy, sse_events, wait_http
from tests.procs import free_port

FALLBACK_KEY = "sk-offline-fallback-key-0000000000000fb7q"
USER_KEY = "sk-offline-user-own-key-000000000000u1k9"
FALLBACK_MODEL = "gpt-4o"


@dataclass
class Fallback:
    stack: Stack
    primary: str
    fallback: str
    metrics: str

    def requests(self, server: str, marker: str) -> list[dict[str, object]]:
        data: list[dict[str, object]] = httpx.get(f"{server}/_offline/requests").json()
        return [r for r in data if marker in str(r.get("last_user_message", ""))]

    def fallbacks(self, outcome: str) -> float:
        text = httpx.get(self.metrics).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "agent_model_fallbacks_total"
                    and sample.labels.get("outcome") == outcome
                ):
                    return float(sample.value)
        return 0.0


@pytest.fixture(scope="module")
def setup(stack: Stack) -> Fallback:
    """The stack's worker replaced by one whose primary always fails and which has a fallback."""
    for process in stack.processes:
        if process.name == "worker":
            process.stop()
    primary_port, fallback_port, metrics_port = free_port(), free_port(), free_port()
    primary = f"http://127.0.0.1:{primary_port}"
    fallback = f"http://127.0.0.1:{fallback_port}"
    failing = stack.spawn(
        "primary-model",
        "offline-model",
        "--port",
        str(primary_port),
        "--fault-rate",
        "1.0",
        "--fault-kind",
        "503",
    )
    wait_http(f"{primary}/_offline/health", failing)
    backup = stack.spawn("fallback-model", "offline-model", "--port", str(fallback_port))
    wait_http(f"{fallback}/_offline/health", backup)
    worker = stack.spawn(
        "worker",
        "worker",
        "--concurrency",
        "8",
        "--lease-seconds",
        "30",
        env={
            "OPENAI_BASE_URL": f"{primary}/v1",
            "OPENAI_FALLBACK_BASE_URL": f"{fallback}/v1",
            "OPENAI_FALLBACK_MODEL": FALLBACK_MODEL,
            "OPENAI_FALLBACK_API_KEY": FALLBACK_KEY,
            "WORKER_METRICS_PORT": str(metrics_port),
        },
    )
    metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    wait_http(metrics, worker)
    return Fallback(stack, primary, fallback, metrics)


def test_a_platform_key_reply_is_completed_by_the_fallback(setup: Fallback) -> None:
    before = setup.fallbacks("ok")
    marker = uuid.uuid4().hex[:8]
    with setup.stack.client("fallback-platform@example.com") as client:
        deployment = deploy(client)
        with client.stream(
            "POST",
            f"/api/agents/{deployment}/chat",
            json={"message": f"hello {marker}"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            events = list(sse_events(response))
    names = [name for _, name, _ in events]
    assert names[-1] == "message.completed", names
    final = events[-1][2]["message"]
    assert isinstance(final, dict)
    assert final["status"] == "completed"
    assert final["model"] == FALLBACK_MODEL  # the message records which model answered
    assert str(final["content"]).startswith(f"Echo: hello {marker}")
    # The primary was tried with its retries first, then the fallback once.
    assert [r["outcome"] for r in setup.requests(setup.primary, marker)] == ["503"] * 4
    answered = setup.requests(setup.fallback, marker)
    assert [(r["outcome"], r["model"]) for r in answered] == [("ok", FALLBACK_MODEL)]
    assert answered[0]["key_last4"] == FALLBACK_KEY[-4:]
    # The streamed text is the fallback's only: every delta of the final generation, in order.
    final_generation = str(events[-1][0]).split(".")[0]
    text = "".join(
        str(data["delta"])
        for event_id, name, data in events
        if name == "message.delta" and str(event_id).split(".")[0] == final_generation
    )
    assert text == final["content"]
    assert setup.fallbacks("ok") == before + 1
    with psycopg.connect(setup.stack.db_url) as conn:
        row = conn.execute(
            "select properties ->> 'model', properties ->> 'fallback' from private.telemetry_events"
            " where name = 'agent.chat.response.received' and properties ->> 'message_id' = %s",
            (final["id"],),
        ).fetchone()
    assert row == (FALLBACK_MODEL, "true")


def test_a_user_key_reply_fails_and_never_reaches_the_fallback(setup: Fallback) -> None:
    marker = uuid.uuid4().hex[:8]
    with setup.stack.client("fallback-own-key@example.com") as client:
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": USER_KEY})
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": f"hi {marker}"})
        assert response.status_code == 200, response.text
        reply = response.json()["assistant_message"]
        assert reply["status"] == "failed"
        assert reply["error"]["code"] == "upstream_unavailable"
        # A provider outage is not the deployment's fault: it stays active.
        assert client.get(f"/api/deployments/{deployment}").json()["status"] == "active"
    assert len(setup.requests(setup.primary, marker)) == 4
    assert setup.requests(setup.fallback, marker) == []
    every = httpx.get(f"{setup.fallback}/_offline/requests").json()
    assert all(r.get("key_last4") != USER_KEY[-4:] for r in every)
