"""The bench's CPU readings from /proc and the chat report's table, without a database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentmarket.core import paths
from agentmarket.devtools import bench
from agentmarket.devtools.proc_cpu import CpuMeter, cpu_seconds, descendants

BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_cpu_seconds_of_this_process_and_of_a_gone_one() -> None:
    used = cpu_seconds(os.getpid())
    assert used is not None and used > 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert cpu_seconds(gone.pid) is None


def test_a_busy_child_is_found_and_measured() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nsys.stdin.readline()\n" + BUSY + "time.sleep(30)",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        assert child.pid in descendants(os.getpid())
        meter = CpuMeter(
            processes={"mine": [os.getpid()], "alone": [os.getpid()]}, without_children=("alone",)
        )
        meter.start()
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        while (cpu_seconds(child.pid) or 0) < 0.25 and child.poll() is None:
            pass  # this process spins too, so both groups used CPU
        used = meter.stop()
        found = meter.found()
    finally:
        child.kill()
        child.wait()
        if child.stdin is not None:
            child.stdin.close()
    assert used["mine"] > used["alone"] > 0
    assert found["mine"] >= 2 and found["alone"] == 1


def _results(statements: float | None) -> dict[str, object]:
    def target(name: str, worker: bool) -> dict[str, object]:
        cpu = {"api": 2.0, "api_db": 1.0, "model": 0.5, "client": 1.5, "server": 3.0}
        if worker:
            cpu |= {"worker": 4.0, "worker_db": 1.0, "server": 8.0}
        return {
            "name": name,
            "throughput": {
                "msg_per_s": 50.0,
                "cpu_ms_per_message": cpu,
                "statements_per_message": statements,
            },
            "long": {"cpu_us_per_token": {"server": 300.0, "api": 100.0, "worker": 200.0}},
            "latency": [
                {"ttft_overhead_ms": [5.0, 9.0], "completion_overhead_ms": [7.0, 12.0]},
                {"ttft_overhead_ms": [50.0, 90.0], "completion_overhead_ms": [70.0, 120.0]},
            ],
            "errors": 0,
            "load_average": [1.0, 2.5],
        }

    return {
        "measured_at": "now",
        "machine": "here",
        "plan": {**bench.ChatPlan().__dict__, "levels": [10, 50]},
        "targets": {
            "ours": target("ours", True),
            "sdk": target("naive proxy", False),
            "raw": target("raw proxy", False),
        },
    }


def test_the_table_has_one_column_per_target_and_dashes_where_none_applies() -> None:
    report = bench.chat_report("cmd", _results(7.5))
    lines = report.splitlines()
    assert "| metric | ours | naive proxy | raw proxy |" in lines
    worker = next(x for x in lines if x.startswith("|   worker process |"))
    assert worker == "|   worker process | 4.00 ms | n/a | n/a |"
    per_token = next(x for x in lines if x.startswith("|   worker (references"))
    assert per_token.endswith("| 200 µs | 100 µs | 100 µs |")
    assert "| Postgres statements per message | 7.5 | 7.5 | 7.5 |" in lines
    load = "| machine load (1-minute load average) before / after the target's phases |"
    assert f"{load} 1.0 / 2.5 | 1.0 / 2.5 | 1.0 / 2.5 |" in lines
    ttft = "TTFT overhead p50 / p95, 50 concurrent conversations | 50 / 90 ms"
    assert any(ttft in x for x in lines)


def test_statements_not_counted_says_so() -> None:
    report = bench.chat_report("cmd", _results(None))
    assert "not counted (pg_stat_statements not loaded)" in report


def test_a_rewritten_section_keeps_the_blank_line_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "docs").mkdir()
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## A\n\nold\n\n## B\n\nkept\n", encoding="utf-8")
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path)
    bench.write_section("## A\n\nnew\n", "A")
    assert doc.read_text(encoding="utf-8") == "# Benchmarks\n\n## A\n\nnew\n\n## B\n\nkept\n"
    bench.write_section("## B\n\nnewer", "B")  # the last section
    assert doc.read_text(encoding="utf-8") == "# Benchmarks\n\n## A\n\nnew\n\n## B\n\nnewer\n"
    bench.write_section("## C\n\nadded\n", "C")
    assert doc.read_text(encoding="utf-8").endswith("## B\n\nnewer\n\n## C\n\nadded\n")
