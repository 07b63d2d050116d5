"""`agentmarket serve --workers N` and `agentmarket worker --processes N`: several processes of
each, every one with its own pool and LISTEN connection, on uvloop."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Process, Stack, deploy, sse_events, wait_http
from tests.e2e.test_chat import finished, wait_message
from tests.procs import free_port
from tests.unit.test_dashboard import documented as documented_metrics

pytestmark = [pytest.mark.db, pytest.mark.e2e]


def log_lines(process: Process, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in process.output().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                lines.append(record)
    return lines


def wait_log(process: Process, event: str, count: int, seconds: float = 30) -> list[dict[str, Any]]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = log_lines(process, event)
        if len(found) >= count:
            return found
        assert process.popen.poll() is None, process.output()
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} {event} lines:\n{process.output()}")


def stop_default_worker(stack: Stack) -> None:
    for process in stack.processes:
        if process.name == "worker":
            assert process.stop() == 0, process.output()


def test_serve_with_two_workers_answers_and_streams(stack: Stack) -> None:
    port = free_port()
    api = stack.spawn("api2", "serve", "--port", str(port), "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/readyz", api)
    started = wait_log(api, "api.started", 2)
    assert len({line["pid"] for line in started}) == 2
    assert {line["loop"] for line in started} == {"uvloop"}

    headers = {"Authorization": f"Bearer {stack.token('two-apis@example.com')}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        deployment = deploy(client)
        with client.stream(
            "POST",
            f"/api/agents/{deployment}/chat",
            json={"message": "through two workers"},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            events = list(sse_events(stream))
        assert events[-1][1] == "message.completed"
        final = events[-1][2]["message"]
        assert isinstance(final, dict)
        assert final["content"].startswith("Echo: through two workers")

        def blocking(i: int) -> int:
            r = client.post(f"/api/agents/{deployment}/chat", json={"message": f"q{i}"})
            return r.status_code

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            assert list(pool.map(blocking, range(12))) == [200] * 12

    assert api.stop() == 0, api.output()


def test_worker_processes_share_the_queue_and_stop_on_sigterm(stack: Stack) -> None:
    stop_default_worker(stack)
    # Two replies at a time per process: eight slow replies need both processes.
    parent = stack.spawn(
        "workers2", "worker", "--concurrency", "2", "--lease-seconds", "3", "--processes", "2"
    )
    started = wait_log(parent, "worker.started", 2)
    assert len({line["worker_id"] for line in started}) == 2
    assert {line["loop"] for line in log_lines(parent, "worker.loop")} == {"uvloop"}
    (supervisor,) = log_lines(parent, "worker.supervisor.started")
    children = supervisor["pids"]
    assert len(set(children)) == 2

    with stack.client("two-workers@example.com") as client:
        deployment = deploy(client)
        replies = []
        for i in range(8):
            sent = client.post(
                f"/api/agents/{deployment}/chat",
                json={"message": f"slow {i} [[long:20]] [[tps:40]]", "mode": "async"},
            )
            assert sent.status_code == 202, sent.text
            replies.append(sent.json()["assistant_message"]["id"])
        for reply in replies:
            message = wait_message(client, reply, until=finished, seconds=60)
            assert message["status"] == "completed", message

    finishers = {line["worker_id"] for line in log_lines(parent, "job.finished")}
    assert finishers == {line["worker_id"] for line in started}

    assert parent.stop() == 0, parent.output()
    assert len(log_lines(parent, "worker.stopped")) == 2
    assert [line["exitcode"] for line in log_lines(parent, "worker.process.exited")] == [0, 0]
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def two_free_ports() -> int:
    """A port whose next one is free too."""
    for _ in range(20):
        port = free_port()
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port + 1))
            return port
    raise AssertionError("no two consecutive free ports")


def scrape(url: str) -> dict[str, list[Any]]:
    """Family name -> its samples, parsed as Prometheus does."""
    text = httpx.get(url, timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


WORKER_SERIES = {
    "agent_chat_ttft_seconds",
    "agent_chat_response_time_seconds",
    "agent_chat_queue_depth",
    "agent_chat_queue_oldest_seconds",
    "agent_chat_queue_pickup_seconds",
    "agent_model_attempts",
    "marketplace_agents_active",
    "marketplace_conversations_active",
}
API_SERIES = {"http_request_duration_seconds", "marketplace_deployments", "agent_chat_messages"}
POOL_SERIES = {
    "db_pool_connections_in_use",
    "db_pool_connections_idle",
    "db_pool_requests_waiting",
    "db_pool_max_connections",
}


def test_each_worker_process_serves_its_own_metrics_and_the_api_only_its_own(
    stack: Stack,
) -> None:
    stop_default_worker(stack)
    port = two_free_ports()
    parent = stack.spawn(
        "workers-metrics",
        "worker",
        "--processes",
        "2",
        "--lease-seconds",
        "3",
        env={"WORKER_METRICS_PORT": str(port)},
    )
    wait_log(parent, "worker.started", 2)
    with stack.client("worker-metrics@example.com") as client:
        deployment = deploy(client)
        for i in range(4):
            sent = client.post(f"/api/agents/{deployment}/chat", json={"message": f"m{i}"})
            assert sent.status_code == 200, sent.text
        api = scrape(f"{stack.api}/metrics")

    workers = [scrape(f"http://127.0.0.1:{port + i}/metrics") for i in (0, 1)]
    for families in workers:
        assert families.keys() >= WORKER_SERIES, sorted(families)
        assert not API_SERIES & families.keys()
    answered = sum(
        sample.value
        for families in workers
        for sample in families["agent_model_attempts"]
        if sample.name == "agent_model_attempts_total" and sample.labels["outcome"] == "ok"
    )
    assert answered == 4
    assert api.keys() >= API_SERIES, sorted(api)
    assert not WORKER_SERIES & api.keys()
    # Each process has its own pool's gauges: the request pool, each worker's pool.
    for families, pool in [(api, "requests"), *((w, "worker") for w in workers)]:
        assert families.keys() >= POOL_SERIES
        assert {s.labels["pool"] for s in families["db_pool_max_connections"]} == {pool}
    # Every metric docs/operations.md documents is served by one of the two kinds of process
    # (counters' families are named without `_total`).
    served = api.keys() | workers[0].keys() | workers[1].keys()
    documented = {
        name.removesuffix("_total") if kind == "counter" else name
        for name, kind in documented_metrics().items()
    }
    assert documented <= served, sorted(documented - served)
    assert parent.stop() == 0, parent.output()
