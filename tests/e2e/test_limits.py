"""Limits across real processes: two functions instances on one database share the user's chat
quota (exactly the limit admitted from a concurrent burst); replies held open by the model count
as in flight until they finish; streaming sends carry the quota headers."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import GENEROUS_LIMITS, Stack, deploy, set_limits, wait_http
from tests.e2e.test_chat import finished, wait_message
from tests.procs import free_port

pytestmark = [pytest.mark.db, pytest.mark.e2e]

OWN_KEY = "sk-offline-own-key-1234567890abcdefghij"


@pytest.fixture(scope="module")
def stack_limits() -> dict[str, int]:
    return {**GENEROUS_LIMITS, "chat_per_minute": 20, "max_in_flight_per_user": 100}


@pytest.fixture(scope="module")
def second_api(stack: Stack) -> Iterator[str]:
    """Another functions instance on the same database."""
    port = free_port()
    process = stack.spawn("api-2", "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", process)
    yield url
    process.stop()


def test_thirty_sends_at_once_on_two_instances_admit_exactly_twenty(
    stack: Stack, second_api: str
) -> None:
    token = stack.token(f"burst-{uuid.uuid4().hex[:8]}@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.api, headers=headers, timeout=60) as client:
        deployment = deploy(client)
    start = threading.Barrier(30)

    def send(i: int) -> httpx.Response:
        base = stack.api if i % 2 else second_api
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            start.wait(timeout=30)
            return client.post(
                f"/api/agents/{deployment}/chat",
                json={"message": f"burst {i}", "mode": "async"},
            )

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(send, range(30)))
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(accepted), len(refused)) == (20, 10), [r.status_code for r in responses]
    assert {r.json()["code"] for r in refused} == {"rate_limited"}
    retry_after = max(int(r.headers["Retry-After"]) for r in refused)
    assert min(int(r.headers["Retry-After"]) for r in refused) >= 1

    time.sleep(retry_after)
    with httpx.Client(base_url=second_api, headers=headers, timeout=60) as client:
        again = client.post(
            f"/api/agents/{deployment}/chat", json={"message": "after the wait", "mode": "async"}
        )
    assert again.status_code == 202, again.text
    assert again.headers["RateLimit"].startswith('"chat";r=0;')


def test_replies_held_open_by_the_model_are_in_flight(stack: Stack) -> None:
    set_limits(stack.db_url, agent_rate=None, max_in_flight_per_user=4)
    try:
        with stack.client(f"inflight-{uuid.uuid4().hex[:8]}@example.com") as client:
            deployment = deploy(client)
            chat = f"/api/agents/{deployment}/chat"
            quick = client.post(chat, json={"message": "quick [[ttft:1500]]", "mode": "async"})
            held = [
                client.post(chat, json={"message": f"held {i} [[ttft:30000]]", "mode": "async"})
                for i in range(3)
            ]
            assert [r.status_code for r in [quick, *held]] == [202] * 4
            fifth = client.post(chat, json={"message": "one too many", "mode": "async"})
            assert fifth.status_code == 429, fifth.text
            assert fifth.json()["code"] == "too_many_in_flight"
            assert int(fifth.headers["Retry-After"]) >= 1
            done = wait_message(client, quick.json()["assistant_message"]["id"], until=finished)
            assert done["status"] == "completed"
            assert client.post(chat, json={"message": "now", "mode": "async"}).status_code == 202
            for response in held:
                client.post(f"/api/messages/{response.json()['assistant_message']['id']}/cancel")
    finally:
        set_limits(stack.db_url, agent_rate=None, max_in_flight_per_user=100)


def test_a_streaming_send_carries_the_quota_headers(stack: Stack) -> None:
    with stack.client(f"stream-{uuid.uuid4().hex[:8]}@example.com") as client:
        deployment = deploy(client)
        with client.stream(
            "POST",
            f"/api/agents/{deployment}/chat",
            json={"message": "hello"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["RateLimit-Policy"] == '"chat";q=20;w=60'
            assert response.headers["RateLimit"].startswith('"chat";r=19;')
            assert any("message.completed" in line for line in response.iter_lines())


def test_the_platform_token_budget_counts_real_replies_and_spares_own_keys(stack: Stack) -> None:
    """The worker's finished replies count toward the platform-key budget; once it is spent the
    next platform-key send is refused until midnight UTC, while the user's own key still works."""
    set_limits(stack.db_url, agent_rate=None, platform_tokens_per_day=20)
    try:
        with stack.client(f"budget-{uuid.uuid4().hex[:8]}@example.com") as client:
            platform = deploy(client)
            own = deploy(client, "code-review-buddy", {"openai_api_key": OWN_KEY})
            first = client.post(
                f"/api/agents/{platform}/chat", json={"message": "spend the budget please"}
            )
            assert first.status_code == 200, first.text
            usage = first.json()["assistant_message"]["usage"]
            assert usage["prompt_tokens"] + usage["completion_tokens"] >= 20
            spent = client.get("/api/me/usage").json()["platform_tokens"]
            assert spent == {
                "used_today": usage["prompt_tokens"] + usage["completion_tokens"],
                "budget_per_day": 20,
            }
            refused = client.post(
                f"/api/agents/{platform}/chat", json={"message": "one more", "mode": "async"}
            )
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "token_budget_exhausted"
            assert 1 <= int(refused.headers["Retry-After"]) <= 86_400
            mine = client.post(f"/api/agents/{own}/chat", json={"message": "my own key"})
            assert mine.status_code == 200, mine.text
            assert mine.json()["assistant_message"]["status"] == "completed"
            # Own-key tokens are not counted.
            assert client.get("/api/me/usage").json()["platform_tokens"] == spent
    finally:
        set_limits(stack.db_url, agent_rate=None, platform_tokens_per_day=0)
