"""Hardening, against the real processes: writes are readable the moment they are acknowledged,
replies stop with their deployment or conversation, the platform key never stands in for a
user's own, and replies are bounded."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import Stack, deploy, sse_events

pytestmark = [pytest.mark.db, pytest.mark.e2e]

USER_KEY = "sk-offline-user-key-0000000000000000user"
MAX_REPLY_CHARS = 200_000


def wait_for(client: httpx.Client, message_id: str, until: Any, seconds: float = 30) -> Any:
    end = time.monotonic() + seconds
    while True:
        message = client.get(f"/api/messages/{message_id}").json()
        if until(message) or time.monotonic() > end:
            return message
        time.sleep(0.05)


@contextlib.contextmanager
def following(
    client: httpx.Client, reply_id: str
) -> Iterator[list[tuple[str | None, str, dict[str, object]]]]:
    """The reply's SSE events, read in a thread while the block runs; the stream must end by
    itself within 10 s of the block's end."""
    events: list[tuple[str | None, str, dict[str, object]]] = []
    attached = threading.Event()

    def follow() -> None:
        with client.stream("GET", f"/api/messages/{reply_id}/stream") as response:
            attached.set()
            events.extend(sse_events(response))

    reader = threading.Thread(target=follow)
    reader.start()
    attached.wait(10)
    time.sleep(0.3)  # attached and past the first read of the stored text
    yield events
    reader.join(10)
    assert not reader.is_alive(), "the stream did not end"


def slow_reply(client: httpx.Client, deployment: str, text: str) -> dict[str, Any]:
    """Send a reply that takes a minute to write; return the send once its text has begun."""
    sent = client.post(
        f"/api/agents/{deployment}/chat",
        json={"message": f"{text} [[tps:5]] [[long:300]]", "mode": "async"},
    )
    assert sent.status_code == 202, sent.text
    body: dict[str, Any] = sent.json()
    wait_for(
        client, body["assistant_message"]["id"], lambda m: m["status"] == "running" and m["content"]
    )
    return body


def requests_with(stack: Stack, marker: str) -> list[dict[str, object]]:
    return [r for r in stack.offline_requests() if marker in str(r.get("last_user_message", ""))]


# Commits of rows marked "slow-commit" take a moment (a deferred trigger sleeps at COMMIT), so a
# server that answered before committing is caught every time, not only when a race is lost.
SLOW_COMMIT = """
create or replace function public.slow_commit() returns trigger language plpgsql as $$
begin
  perform pg_sleep(0.15);
  return null;
end
$$;
create constraint trigger slow_commit after insert or update on public.agent_deployments
  deferrable initially deferred for each row when (new.name like 'slow-commit%%')
  execute function public.slow_commit();
create constraint trigger slow_commit after insert on public.agent_conversations
  deferrable initially deferred for each row when (new.title like 'slow-commit%%')
  execute function public.slow_commit();
create constraint trigger slow_commit after insert on public.agent_messages
  deferrable initially deferred for each row when (new.content like 'slow-commit%%')
  execute function public.slow_commit();
"""


def test_every_acknowledged_write_is_readable_at_once_under_concurrency(stack: Stack) -> None:
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        conn.execute(SLOW_COMMIT)
    misses = _Misses()

    def worker(n: int) -> None:
        # Read-backs go over another connection, as a second tab or instance would.
        email = f"rw{n}@example.com"
        with stack.client(email) as client, stack.client(email) as reader:
            for i in range(5):
                _round_trip(client, reader, i, misses)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    assert misses.found == []


class _Misses:
    """Read-backs that did not see an acknowledged write, collected from many threads."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, what: str, response: httpx.Response) -> None:
        with self._lock:
            self.found.append(f"{what}: {response.status_code} {response.text[:200]}")


def _round_trip(client: httpx.Client, reader: httpx.Client, i: int, miss: _Misses) -> None:
    """Deploy, open a conversation, chat, rename, delete: each read back at once by `reader`."""
    created = client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "name": f"slow-commit {i}", "config": {}},
    )
    assert created.status_code == 201, created.text
    deployment = created.json()["id"]
    if (r := reader.get(f"/api/deployments/{deployment}")).status_code != 200:
        miss("deploy", r)
    base = f"/api/agents/{deployment}"
    conversation = client.post(f"{base}/conversations", json={"title": f"slow-commit {i}"})
    assert conversation.status_code == 201, conversation.text
    conversation_id = conversation.json()["id"]
    if (r := reader.get(f"{base}/conversations/{conversation_id}")).status_code != 200:
        miss("conversation", r)
    sent = client.post(
        f"{base}/chat",
        json={
            "message": f"slow-commit {i}",
            "conversation_id": conversation_id,
            "mode": "async",
        },
    )
    assert sent.status_code == 202, sent.text
    for message in (sent.json()["user_message"], sent.json()["assistant_message"]):
        if (r := reader.get(f"/api/messages/{message['id']}")).status_code != 200:
            miss("chat", r)
    renamed = client.patch(
        f"/api/deployments/{deployment}", json={"name": f"slow-commit renamed {i}"}
    )
    assert renamed.status_code == 200, renamed.text
    if (r := reader.get(f"/api/deployments/{deployment}")).json().get(
        "name"
    ) != f"slow-commit renamed {i}":
        miss("patch", r)
    deleted = client.delete(f"/api/deployments/{deployment}")
    assert deleted.status_code == 204, deleted.text
    if (r := reader.get(f"/api/deployments/{deployment}")).status_code != 404:
        miss("delete", r)
    # A send after the acknowledged delete is refused, never accepted.
    late = reader.post(f"{base}/chat", json={"message": "too late", "mode": "async"})
    if late.status_code != 404:
        miss("send after delete", late)


def test_deleting_a_deployment_stops_its_running_reply_and_ends_its_stream(stack: Stack) -> None:
    with stack.client("delete-running@example.com") as client:
        deployment = deploy(client)
        marker = uuid.uuid4().hex[:8]
        reply_id = slow_reply(client, deployment, f"slow {marker}")["assistant_message"]["id"]
        with following(client, reply_id) as events:
            assert client.delete(f"/api/deployments/{deployment}").status_code == 204
        final = client.get(f"/api/messages/{reply_id}").json()
    assert final["status"] == "cancelled"
    assert final["error"]["code"] == "deployment_deleted"
    assert final["content"]  # the partial text is kept
    last_name, data = events[-1][1], events[-1][2]
    assert last_name == "message.completed"
    assert data["message"]["status"] == "cancelled"  # type: ignore[index]
    assert all(event_id for event_id, name, _ in events if name != "ping")
    # The worker hung up on the model (told by the delete), long before the 300-word reply ended.
    end = time.monotonic() + 10
    while not (request := requests_with(stack, marker)[0])["client_disconnected"]:
        assert time.monotonic() < end, request
        time.sleep(0.1)
    assert int(str(request["tokens_sent"])) < 300


def test_a_send_that_raced_the_delete_never_reaches_the_model(stack: Stack) -> None:
    with stack.client("raced@example.com") as client:
        deployment = deploy(client)
        conversation = client.post(f"/api/agents/{deployment}/conversations", json={}).json()
        assert client.delete(f"/api/deployments/{deployment}").status_code == 204
    marker = uuid.uuid4().hex[:8]
    # What a send whose transaction overlapped the delete leaves behind: a queued reply.
    with psycopg.connect(stack.db_url, autocommit=True) as conn, conn.transaction():
        user_id = conn.execute(
            "select user_id from public.agent_conversations where id = %s",
            (conversation["id"],),
        ).fetchone()
        assert user_id is not None
        question = conn.execute(
            "insert into public.agent_messages (conversation_id, user_id, role, content, status)"
            " values (%s, %s, 'user', %s, 'completed') returning id",
            (conversation["id"], user_id[0], f"raced {marker}"),
        ).fetchone()
        assert question is not None
        reply = conn.execute(
            "insert into public.agent_messages (conversation_id, user_id, role, status, reply_to)"
            " values (%s, %s, 'assistant', 'queued', %s) returning id",
            (conversation["id"], user_id[0], question[0]),
        ).fetchone()
        assert reply is not None
        conn.execute("insert into private.chat_jobs (message_id) values (%s)", (reply[0],))
        conn.execute("select pg_notify('agentmarket_chat_jobs', '0')")
    with stack.client("raced@example.com") as client:
        final = wait_for(client, str(reply[0]), lambda m: m["status"] not in ("queued", "running"))
    assert final["status"] == "cancelled"
    assert final["error"]["code"] == "deployment_deleted"
    assert requests_with(stack, marker) == []


def test_deleting_a_conversation_ends_the_stream_of_its_reply(stack: Stack) -> None:
    with stack.client("delete-conversation@example.com") as client:
        deployment = deploy(client)
        sent = slow_reply(client, deployment, "slow")
        reply_id, conversation = sent["assistant_message"]["id"], sent["conversation_id"]
        with following(client, reply_id) as events:
            deleted = client.delete(f"/api/agents/{deployment}/conversations/{conversation}")
            assert deleted.status_code == 204
        assert client.get(f"/api/messages/{reply_id}").status_code == 404
    event_id, name, data = events[-1]
    assert name == "message.deleted"
    assert data == {"message_id": reply_id}
    assert event_id


def _user_key_deployment(client: httpx.Client) -> str:
    deployment = deploy(client, "code-review-buddy", {"openai_api_key": USER_KEY})
    assert client.get(f"/api/deployments/{deployment}").json()["status"] == "active"
    return deployment


def test_a_missing_user_key_fails_the_reply_instead_of_using_the_platform_key(
    stack: Stack,
) -> None:
    with stack.client("nokey@example.com") as client:
        deployment = _user_key_deployment(client)
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            conn.execute(
                "delete from private.deployment_secrets where deployment_id = %s", (deployment,)
            )
        marker = uuid.uuid4().hex[:8]
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": marker})
        reply = response.json()["assistant_message"]
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "missing_api_key"
    assert requests_with(stack, marker) == []


def test_an_unreadable_user_key_fails_the_reply_instead_of_using_the_platform_key(
    stack: Stack,
) -> None:
    with stack.client("badsecret@example.com") as client:
        deployment = _user_key_deployment(client)
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            conn.execute(
                "update private.deployment_secrets set ciphertext = 'not a ciphertext'::bytea"
                " where deployment_id = %s",
                (deployment,),
            )
        marker = uuid.uuid4().hex[:8]
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": marker})
        reply = response.json()["assistant_message"]
        assert USER_KEY not in response.text
    assert reply["status"] == "failed"
    assert reply["error"]["code"] == "secret_unreadable"
    assert requests_with(stack, marker) == []


def test_the_users_own_key_answers_when_it_is_readable(stack: Stack) -> None:
    with stack.client("ownkey@example.com") as client:
        deployment = _user_key_deployment(client)
        marker = uuid.uuid4().hex[:8]
        response = client.post(f"/api/agents/{deployment}/chat", json={"message": marker})
        assert response.json()["assistant_message"]["status"] == "completed"
    [request] = requests_with(stack, marker)
    assert request["key_last4"] == "user"


def test_a_reply_longer_than_the_stored_limit_is_cut_cleanly(stack: Stack) -> None:
    with stack.client("long@example.com") as client:
        deployment = deploy(client)
        marker = uuid.uuid4().hex[:8]
        response = client.post(
            f"/api/agents/{deployment}/chat", json={"message": f"{marker} [[long:45000]]"}
        )
        assert response.status_code in (200, 202), response.text
        reply_id = response.json()["assistant_message"]["id"]
        reply = wait_for(
            client, reply_id, lambda m: m["status"] not in ("queued", "running"), seconds=90
        )
    assert reply["status"] == "completed", reply.get("error")
    assert reply["truncated"] is True
    assert len(reply["content"]) == MAX_REPLY_CHARS
    assert reply["content"].startswith(f"Echo: {marker}")
    [request] = requests_with(stack, marker)
    assert request["max_tokens"] == int(stack.env["OPENAI_MAX_TOKENS"])


def test_a_deployments_max_tokens_bounds_the_reply_and_marks_it_truncated(stack: Stack) -> None:
    with stack.client("max-tokens@example.com") as client:
        deployment = deploy(client)
        # An agent whose schema offers `max_tokens` stores it in the config like this.
        with psycopg.connect(stack.db_url, autocommit=True) as conn:
            conn.execute(
                "update public.agent_deployments set config = config || '{\"max_tokens\": 5}'"
                " where id = %s",
                (deployment,),
            )
        marker = uuid.uuid4().hex[:8]
        reply = client.post(
            f"/api/agents/{deployment}/chat", json={"message": f"{marker} [[long:50]]"}
        ).json()["assistant_message"]
    assert reply["status"] == "completed"
    assert reply["truncated"] is True
    assert reply["usage"]["completion_tokens"] == 5
    [request] = requests_with(stack, marker)
    assert request["max_tokens"] == 5


def test_a_short_reply_is_not_marked_truncated(stack: Stack) -> None:
    with stack.client("short@example.com") as client:
        deployment = deploy(client)
        reply = client.post(f"/api/agents/{deployment}/chat", json={"message": "short"}).json()
    assert reply["assistant_message"]["status"] == "completed"
    assert reply["assistant_message"]["truncated"] is False
