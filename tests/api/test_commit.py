"""Commit, then answer: a failed COMMIT is a 503 (nothing stored, nothing acknowledged); a write by
a token whose user is gone is a 401; an unexpected error is a 500 problem that leaves the
connection usable and logs one JSON line."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from agentmarket.core.config import Settings
from agentmarket.core.logging import configure_logging
from functions.app import create_app
from tests.api.conftest import Caller
from tests.procs import free_port

pytestmark = pytest.mark.db

# A deferred constraint trigger fails the transaction at COMMIT, after every statement succeeded.
FAIL_AT_COMMIT = """
create function public.fail_at_commit() returns trigger language plpgsql as $$
begin
  if new.name = 'fail at commit' then
    raise exception 'refused at commit' using errcode = '40001';
  end if;
  return null;
end
$$;
create constraint trigger fail_at_commit after insert or update on public.agent_deployments
  deferrable initially deferred for each row execute function public.fail_at_commit();
"""


async def test_a_failed_commit_is_503_and_nothing_is_stored(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    conn.execute(FAIL_AT_COMMIT)
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "name": "fail at commit", "config": {}},
        headers=alice.headers,
    )
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "database_unavailable"
    assert "Retry-After" in response.headers
    assert conn.execute("select count(*) from public.agent_deployments").fetchone() == (0,)

    fine = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "name": "fine", "config": {}},
        headers=alice.headers,
    )
    assert fine.status_code == 201
    renamed = await client.patch(
        f"/api/deployments/{fine.json()['id']}",
        json={"name": "fail at commit"},
        headers=alice.headers,
    )
    assert renamed.status_code == 503
    assert conn.execute("select name from public.agent_deployments").fetchone() == ("fine",)


# The same for chat messages: a send is one statement whose commit is part of its query.
FAIL_AT_COMMIT_MESSAGES = """
create function public.fail_at_commit() returns trigger language plpgsql as $$
begin
  raise exception 'refused at commit' using errcode = '40001';
end
$$;
create constraint trigger fail_at_commit after insert on public.agent_messages
  deferrable initially deferred for each row execute function public.fail_at_commit();
"""


@pytest.mark.parametrize("mode", ["streaming", "blocking", "async"])
async def test_a_chat_send_that_fails_at_commit_is_503_and_holds_nothing(
    app: FastAPI, client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection, mode: str
) -> None:
    deployed = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {}},
        headers=alice.headers,
    )
    assert deployed.status_code == 201, deployed.text
    conn.execute(FAIL_AT_COMMIT_MESSAGES)
    response = await client.post(
        f"/api/agents/{deployed.json()['id']}/chat",
        json={"message": "hello", "mode": mode},
        headers=alice.headers,
    )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert conn.execute("select count(*) from public.agent_messages").fetchone() == (0,)
    assert conn.execute("select count(*) from private.chat_jobs").fetchone() == (0,)
    # The subscription opened before the send and the stream slot are given back.
    state = app.state.agentmarket
    assert state.hub._subscribers == {}
    assert state.stream_slots.open(alice.user.id) == 0


async def test_a_write_by_a_user_no_longer_in_auth_users_is_401(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    conn.execute("delete from auth.users where id = %s", (alice.user.id,))
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {}},
        headers=alice.headers,
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # Reads need no user row: an empty list, not an error.
    listed = await client.get("/api/deployments", headers=alice.headers)
    assert listed.status_code == 200
    assert listed.json()["data"] == []


def _failing_app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.get("/test-only/boom")
    async def boom() -> None:
        raise RuntimeError("an unexpected failure")

    return app


@pytest.fixture
def live_server(settings: Settings) -> Iterator[tuple[int, io.StringIO]]:
    """The app with one failing route, served by a real uvicorn in a thread; its log lines."""
    port = free_port()
    app = _failing_app(settings)
    lines = io.StringIO()
    configure_logging("info", json_logs=True, stream=lines)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started
    yield port, lines
    server.should_exit = True
    thread.join(10)
    configure_logging("info")  # back to stderr for the tests that follow


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer.extend(chunk)
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.lower().split(":", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    buffer[:] = rest[length:]
    return status, rest[:length]


def test_an_unexpected_error_is_a_500_problem_and_the_connection_survives(
    live_server: tuple[int, io.StringIO], caplog: pytest.LogCaptureFixture
) -> None:
    port, log_lines = live_server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buffer = bytearray()
        sock.sendall(b"GET /test-only/boom HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = _read_response(sock, buffer)
        assert status == 500
        problem = json.loads(body)
        assert problem["code"] == "internal_error"
        assert "RuntimeError" not in body.decode() and "Traceback" not in body.decode()
        # The same keep-alive connection serves the next request.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = _read_response(sock, buffer)
        assert status == 200
        assert json.loads(body) == {"status": "ok"}
    errors = [line for line in log_lines.getvalue().splitlines() if "unhandled_error" in line]
    assert len(errors) == 1
    logged = json.loads(errors[0])
    assert logged["event"] == "unhandled_error"
    assert logged["request_id"] == problem["request_id"]
    assert "Traceback" in logged["exception"] and "an unexpected failure" in logged["exception"]
    # The server itself saw no exception (it would log its own traceback and drop the socket).
    assert [r for r in caplog.records if r.exc_info] == []
