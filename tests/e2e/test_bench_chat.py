"""`agentmarket bench chat` end to end in a tiny configuration: our real processes and both
benchmark references (agentmarket/devtools/naive_proxy.py) against the offline model on a fresh
database. Asserts that every row of the report is there with sane values, never which target is
faster (docs/benchmarks.md holds the measurements)."""

from __future__ import annotations

import json
import math

import pytest

from agentmarket.devtools import bench
from tests.conftest import Server
from tests.e2e.conftest import bench_settings

pytestmark = [pytest.mark.db, pytest.mark.e2e]

PLAN = bench.ChatPlan(
    messages=22,  # over 4 connections: 6, 6, 5 and 5 turns
    connections=4,
    levels=(2, 3),
    turns=1,
    ttft_ms=20,
    long_tokens=15,
    long_tps=100,
    long_conversations=2,
    long_turns=1,
)


@pytest.fixture(scope="module")
def results(pg_server: Server) -> dict[str, object]:
    with bench_settings(pg_server) as settings:
        return bench.run_chat(settings, PLAN)


def test_every_target_streams_and_is_measured(results: dict[str, object]) -> None:
    # One user (and deployment) per conversation of the largest phase: the 4 connections.
    assert results["users"] == 4
    targets = results["targets"]
    assert isinstance(targets, dict)
    assert list(targets) == ["ours", "sdk", "raw"]
    for key, target in targets.items():
        assert target["errors"] == 0, (key, target)
        throughput = target["throughput"]
        assert throughput["messages"] == PLAN.messages
        assert throughput["msg_per_s"] > 0
        assert throughput["statements_per_message"] > 0, key
        cpu = throughput["cpu_ms_per_message"]
        assert cpu["server"] > 0 and cpu["api"] > 0, (key, cpu)
        assert cpu["server"] >= cpu["api"]
        measured = target["processes_measured"]
        assert measured["api"] >= 1 and measured["api_db"] >= 1, (key, measured)
        assert target["backends_readable"], key
        long = target["long"]
        # Each long reply is the echo plus the requested words, counted from the stored replies.
        assert long["replies"] == PLAN.long_conversations * PLAN.long_turns
        assert long["tokens"] >= long["replies"] * PLAN.long_tokens, (key, long)
        assert long["cpu_us_per_token"]["server"] > 0
        assert [row["concurrency"] for row in target["latency"]] == list(PLAN.levels)
        for row in target["latency"]:
            assert row["replies"] == row["concurrency"] * PLAN.turns
            assert all(math.isfinite(v) and v > 0 for v in row["ttft_ms"] + row["completion_ms"])
            assert row["completion_ms"][0] >= row["ttft_ms"][0]
    alone = results["model_alone"]
    assert isinstance(alone, list)
    assert [row["concurrency"] for row in alone] == list(PLAN.levels)
    assert all(row["replies"] == row["concurrency"] * PLAN.turns for row in alone)
    ours = targets["ours"]
    assert ours["throughput"]["cpu_ms_per_message"]["worker"] > 0
    assert ours["processes_measured"]["worker"] >= 1
    assert ours["processes_measured"]["worker_db"] >= 1


def test_report_has_every_row_for_every_target(results: dict[str, object]) -> None:
    report = bench.chat_report("agentmarket bench chat", results)
    assert "| metric | ours | naive proxy | raw proxy |" in report
    for needle in (
        "msg/s",
        "CPU per message, server",
        "worker process",
        "Postgres backends of the API",
        "Postgres statements per message",
        "server CPU per streamed token",
        "TTFT overhead p50 / p95, 2 concurrent",
        "completion overhead p50 / p95, 3 concurrent",
        "errors (all phases)",
        "machine load",
    ):
        line = next((x for x in report.splitlines() if needle in x), None)
        assert line is not None, needle
        assert line.count("|") == 5, line
    assert "not counted" not in report
    assert "The model alone" in report
    data = json.loads(bench.chat_json(results))
    assert set(data["targets"]) == {"ours", "sdk", "raw"}
    assert data["plan"]["levels"] == list(PLAN.levels)
