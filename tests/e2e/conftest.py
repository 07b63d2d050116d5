"""End-to-end: the real processes (functions API, chat worker, offline model) over HTTP, on a
fresh database cloned from the template. One stack per test module; tests use their own users."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from agentmarket.core.config import DEV_JWT_SECRET, Settings
from agentmarket.ops import migrate
from agentmarket.ops.tokens import ensure_user, mint_access_token
from tests.conftest import Server
from tests.procs import free_port

PLATFORM_KEY = "sk-offline-platform-key-0000000000000000"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_http(url: str, process: Process, deadline: float = 30) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.output()}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{process.name} did not come up:\n{process.output()}")


@dataclass
class Stack:
    db_url: str
    api: str
    model: str
    env: dict[str, str]
    logs: Path
    processes: list[Process] = field(default_factory=list)

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Process:
        """`agentmarket *args` with the stack's environment (plus `env`)."""
        log = self.logs / f"{name}-{len(self.processes)}.log"
        with log.open("wb") as sink:
            popen = subprocess.Popen(
                [sys.executable, "-m", "agentmarket", *args],
                env={**self.env, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def worker(self, *extra: str) -> Process:
        return self.spawn("worker", "worker", "--concurrency", "16", "--lease-seconds", "3", *extra)

    def token(self, email: str) -> str:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            user = ensure_user(conn, email=email)
        return mint_access_token(user, secret=DEV_JWT_SECRET)

    def client(self, email: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.api,
            headers={"Authorization": f"Bearer {self.token(email)}"},
            timeout=60,
        )

    def offline_requests(self) -> list[dict[str, object]]:
        data: list[dict[str, object]] = httpx.get(f"{self.model}/_offline/requests").json()
        return data


# Limits out of the way of tests about something else; the limits' own tests set theirs.
GENEROUS_LIMITS = {
    "chat_per_minute": 100_000,
    "deploy_per_minute": 100_000,
    "conversations_per_minute": 100_000,
    "max_in_flight_per_user": 10_000,
    "platform_tokens_per_day": 0,
    "max_deployments_per_user": 100_000,
}


def set_limits(db_url: str, *, agent_rate: int | None = 10_000, **limits: int) -> None:
    """Store limits in the stack's database (as `agentmarket migrate` does) and, unless
    `agent_rate` is None, set every agent's rate_limit_per_minute to it."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate.store_settings(conn, **limits)
        if agent_rate is not None:
            conn.execute(
                "update public.marketplace_agents set rate_limit_per_minute = %s", (agent_rate,)
            )


@pytest.fixture(scope="module")
def stack_limits() -> dict[str, int]:
    """The limits a module's stack runs with (override in a module to test them)."""
    return GENEROUS_LIMITS


@contextlib.contextmanager
def running_stack(
    pg_server: Server,
    logs: Path,
    *,
    limits: dict[str, int],
    env: dict[str, str],
    unset: tuple[str, ...] = ("SUPABASE_URL",),
) -> Iterator[Stack]:
    """The offline model, the API and a worker on a fresh database with `limits` stored,
    started with the process environment plus the database, the model and `env` (minus
    `unset`); stopped and the database dropped afterwards."""
    name = pg_server.create()
    db_url = pg_server.uri_for(name)
    set_limits(db_url, **limits)
    model_port, api_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
        "OPENAI_API_KEY": PLATFORM_KEY,
        **env,
    }
    for key in unset:
        full_env.pop(key, None)
    s = Stack(
        db_url, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{model_port}", full_env, logs
    )
    try:
        model = s.spawn("offline-model", "offline-model", "--port", str(model_port))
        wait_http(f"{s.model}/_offline/health", model)
        api = s.spawn("api", "serve", "--port", str(api_port))
        wait_http(f"{s.api}/readyz", api)
        s.worker()
        yield s
    finally:
        for process in reversed(s.processes):
            process.stop()
        pg_server.drop(name)


@pytest.fixture(scope="module")
def stack(
    pg_server: Server, tmp_path_factory: pytest.TempPathFactory, stack_limits: dict[str, int]
) -> Iterator[Stack]:
    env = {
        "APP_ENV": "test",
        "LOG_LEVEL": "info",
        "CHAT_WAIT_SECONDS": "30",
        "SSE_PING_SECONDS": "1",
        "CATALOG_CACHE_SECONDS": "0",
        "OPENAI_TIMEOUT_SECONDS": "2",
        # Above the stored limit of a reply (200,000 characters), so that limit can be reached.
        "OPENAI_MAX_TOKENS": "60000",
    }
    logs = tmp_path_factory.mktemp("e2e-logs")
    with running_stack(pg_server, logs, limits=stack_limits, env=env) as s:
        yield s


def deploy(
    client: httpx.Client, agent: str = "sql-sidekick", config: dict[str, object] | None = None
) -> str:
    response = client.post(
        "/api/marketplace/deploy", json={"agent_id": agent, "config": config or {}}
    )
    assert response.status_code == 201, response.text
    deployment_id: str = response.json()["id"]
    return deployment_id


def sse_events(response: httpx.Response) -> Iterator[tuple[str | None, str, dict[str, object]]]:
    """(id, event, data) for each SSE event of a streaming response."""
    import json

    event_id: str | None = None
    name = "message"
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield event_id, name, json.loads("\n".join(data))
            event_id, name, data = None, "message", []
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def stream_short_messages(client: httpx.Client, deployment: str, count: int) -> None:
    """Send `count` short messages one after another, each streamed to `message.completed`."""
    for i in range(count):
        with client.stream(
            "POST",
            f"/api/agents/{deployment}/chat",
            json={"message": f"short {i}"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            names = [name for _, name, _ in sse_events(response)]
        assert names[-1] == "message.completed", names


@contextlib.contextmanager
def bench_settings(pg_server: Server) -> Iterator[Settings]:
    """Settings for an `agentmarket bench` run in a test: a fresh database of the test server,
    the environment (which the bench's processes inherit) pointing at it and at nothing else."""
    name = pg_server.create()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", pg_server.uri_for(name))
        env.setenv("APP_ENV", "test")
        for unset in (
            "DATABASE_DIRECT_URL",
            "API_DATABASE_URL",
            "API_DATABASE_DIRECT_URL",
            "WORKER_DATABASE_URL",
            "SUPABASE_URL",
        ):
            env.delenv(unset, raising=False)
        try:
            yield Settings()
        finally:
            pg_server.drop(name)
