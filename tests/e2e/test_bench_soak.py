"""`agentmarket bench soak` end to end, briefly: the real processes against the offline model with
30 % of model calls faulted (every kind of the mix) and the worker killed with SIGKILL twice. The
run's own checks (nothing stuck, nothing duplicated, streamed text = stored text) must pass, and
the report must say what happened. No timing is asserted."""

from __future__ import annotations

import pytest

from agentmarket.devtools import bench_soak
from tests.conftest import Server
from tests.e2e.conftest import bench_settings

pytestmark = [pytest.mark.db, pytest.mark.e2e]

PLAN = bench_soak.SoakPlan(
    seconds=20,
    fault_rate=0.3,
    kill_every=8,  # two kills within the run
    conversations=4,
    lease_seconds=3,
    drain_seconds=60,
    seed=11,
)


@pytest.fixture(scope="module")
def report(pg_server: Server) -> bench_soak.SoakReport:
    with bench_settings(pg_server) as settings:
        return bench_soak.run_soak(settings, PLAN)


def test_soak_survives_faults_and_kills(report: bench_soak.SoakReport) -> None:
    assert report.ok, report
    assert report.stuck == 0 and report.duplicated == 0 and report.mismatched == 0
    assert report.kills == 2
    assert report.completed > 0 and report.turns >= report.completed
    # The model saw every kind of fault of the mix, and more calls than replies (retries).
    faults = {kind for kind in report.model_requests if kind != "ok"}
    assert faults <= {"429", "500", "503", "timeout", "cut"}
    assert len(faults) >= 2, report.model_requests
    assert sum(report.model_requests.values()) > report.turns
    # Every reply the clients followed is stored, and every stored reply has ended.
    stored = sum(report.stored.values())
    assert stored >= report.turns
    assert not any(status.startswith(("queued", "running")) for status in report.stored)
    assert report.p95_ms >= report.p50_ms > 0


def test_soak_report_section(report: bench_soak.SoakReport) -> None:
    section = bench_soak.soak_report("agentmarket bench soak --minutes 0.3", report)
    assert section.startswith(f"## {bench_soak.TITLE}\n")
    for row in (
        "| completed |",
        "| worker kills | 2 |",
        "| stuck (queued/running at the end) | 0 |",
    ):
        assert row in section
    assert "| verdict | ok |" in section
