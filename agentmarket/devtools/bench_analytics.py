"""`agentmarket bench analytics [--fixture]`: the admin analytics endpoints on a big marketplace.

`--fixture` first fills the database DATABASE_URL points at with the generated activity
(agentmarket/devtools/analytics_fixture.py: 1 M messages, 100 k conversations, 10 k deployments
over 90 days); it refuses a database that already has messages, so it only ever runs on a
throwaway one. Then the real server process answers GET /api/admin/marketplace/stats and
/metrics for the last 90 days, `calls` times each, one at a time, as an admin (a local token), and
the plans of the functions' statements are read with auto_explain (ANALYZE, BUFFERS, nested
statements) to show which scans the 90-day reports make.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from agentmarket.core.config import Settings
from agentmarket.devtools import bench
from agentmarket.devtools.analytics_fixture import Fixture, generate
from agentmarket.ops import tokens

__all__ = ["TITLE", "AnalyticsRun", "analytics_report", "run_analytics"]

TITLE = "Admin analytics: 90 days of a 1 M-message marketplace"
_SCAN = re.compile(
    r"((?:Parallel )?(?:Seq|Index|Index Only|Bitmap Heap) Scan)(?: using \S+)? on (\S+)"
)


@dataclass
class AnalyticsRun:
    counts: dict[str, int]
    fixture_seconds: float | None
    results: list[bench.Result]
    scans: dict[str, list[str]] = field(default_factory=dict)  # report -> "Seq Scan on x" lines
    plans: dict[str, str] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after the calls


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    row = conn.execute(
        "select (select count(*) from public.agent_messages),"
        " (select count(*) from public.agent_conversations),"
        " (select count(*) from public.agent_deployments)"
    ).fetchone()
    assert row is not None
    return dict(zip(("messages", "conversations", "deployments"), map(int, row), strict=True))


def _plans(url: str, start: str, end: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each report's nested statements' plans (auto_explain with ANALYZE and BUFFERS, sent to
    this client) and the scans in them."""
    scans: dict[str, list[str]] = {}
    plans: dict[str, str] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        messages: list[str] = []
        conn.add_notice_handler(lambda diag: messages.append(diag.message_primary or ""))
        for statement in (
            "load 'auto_explain'",
            "set auto_explain.log_min_duration = 0",
            "set auto_explain.log_analyze = on",
            "set auto_explain.log_buffers = on",
            "set auto_explain.log_nested_statements = on",
            "set client_min_messages = log",
            'set request.jwt.claims = \'{"role": "authenticated",'
            ' "app_metadata": {"role": "admin"}}\'',
        ):
            conn.execute(statement)
        for name in ("stats", "metrics"):
            messages.clear()
            conn.execute(
                f"select private.marketplace_{name}(%s::date, %s::date, 'UTC')",
                (start, end),
            )
            text = "\n\n".join(messages)
            plans[name] = text
            scans[name] = sorted({f"{m.group(1)} on {m.group(2)}" for m in _SCAN.finditer(text)})
    return scans, plans


def _time_calls(base: str, token: str, start: str, end: str, calls: int) -> list[bench.Result]:
    """Each report for [start, end] `calls` times, one at a time, after two warm-up calls."""
    results: list[bench.Result] = []
    with httpx.Client(base_url=base, timeout=120) as client:
        headers = {"Authorization": f"Bearer {token}"}
        for name in ("stats", "metrics"):
            path = f"/api/admin/marketplace/{name}"
            params = {"from": start, "to": end, "tz": "UTC"}
            for _ in range(2):  # warm-up: connections, plans, caches
                client.get(path, params=params, headers=headers).raise_for_status()
            latencies: list[float] = []
            errors = 0
            began = time.perf_counter()
            for _ in range(calls):
                t0 = time.perf_counter()
                response = client.get(path, params=params, headers=headers)
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += response.status_code != 200
            elapsed = time.perf_counter() - began
            results.append(
                bench.Result.from_latencies(
                    f"GET {path} (90 days, UTC)", 1, elapsed, latencies, errors
                )
            )
    return results


def run_analytics(
    settings: Settings, *, fixture: Fixture | None, calls: int, progress: bool = True
) -> AnalyticsRun:
    url = settings.database_url.get_secret_value()
    fixture_seconds = None
    if fixture is not None:
        with psycopg.connect(url) as conn:
            if _counts(conn)["messages"]:
                raise SystemExit(
                    "the database already has messages: --fixture only fills a throwaway one "
                    "(createdb, point DATABASE_URL at it, agentmarket migrate up && seed)"
                )
        started = time.perf_counter()
        generate(
            url,
            fixture,
            progress=(lambda step, s: print(f"fixture: {step} {s:.1f}s", flush=True))
            if progress
            else None,
        )
        fixture_seconds = time.perf_counter() - started
    if settings.supabase_jwt_secret is None:
        raise SystemExit("SUPABASE_JWT_SECRET is not set: cannot sign the admin's token")
    with psycopg.connect(url, autocommit=True) as conn:
        counts = _counts(conn)
        admin = tokens.ensure_user(conn, email="bench-admin@fixture.test", admin=True)
    token = tokens.mint_access_token(
        admin,
        secret=settings.supabase_jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
    )
    today = datetime.now(UTC).date()
    start, end = str(today - timedelta(days=89)), str(today)
    process, base = bench._start_server(settings)
    load_before = os.getloadavg()[0]
    try:
        results = _time_calls(base, token, start, end, calls)
    finally:
        process.terminate()
        process.wait(timeout=10)
    load_after = os.getloadavg()[0]
    scans, plans = _plans(url, start, end)
    return AnalyticsRun(counts, fixture_seconds, results, scans, plans, (load_before, load_after))


def analytics_report(command: str, run: AnalyticsRun) -> str:
    notes = [
        f"Data: {run.counts['messages']:,} messages, {run.counts['conversations']:,} "
        f"conversations, {run.counts['deployments']:,} deployments over 90 days"
        + (f" (fixture generated in {run.fixture_seconds:.0f} s)." if run.fixture_seconds else ".")
        + " One admin, one request at a time; the server is `agentmarket serve` (1 worker). "
        f"Load average (1 min) on the shared machine: {run.load[0]:.1f} before the calls, "
        f"{run.load[1]:.1f} after.",
        "",
        "Scans in the reports' statements (auto_explain: EXPLAIN ANALYZE, BUFFERS of every "
        "nested statement of one 90-day call):",
        "",
    ]
    for name, scans in run.scans.items():
        notes.append(f"- {name}: " + ", ".join(f"`{s}`" for s in scans))
    seq = [s for scans in run.scans.values() for s in scans if s.endswith("on agent_messages")]
    notes += [
        "",
        "No scan of `agent_messages` at all: the reports read the rollups the triggers keep "
        "(`private.analytics_hourly_cells`, `analytics_user_hours`, the presence bitmaps "
        "`analytics_presence_hours` / `analytics_presence_days`, the replies' cells "
        "`analytics_reply_hour_cells` / `analytics_reply_day_cells`, the change rows not "
        "folded into the cells yet, `analytics_replies`, `analytics_feedback`)."
        if not seq
        else f"Scans of agent_messages: {', '.join(seq)}.",
    ]
    return bench.report(TITLE, command, run.results, notes)
