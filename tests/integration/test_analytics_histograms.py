"""The replies' cells (supabase/migrations/20261130190100_analytics_reply_cells.sql): the triggers
keep them equal to a recount whatever writes the replies; the report read from them equals the
exact report on every count and sum and is within the histograms' bound on every percentile, in
UTC and in zones whose days cut UTC days; and the admin API uses them only for large, unfiltered,
hour-aligned ranges, saying so in `percentiles`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agentmarket.devtools.analytics_fixture import Fixture, generate
from agentmarket.domain import histogram
from agentmarket.services.analytics import resolve_histograms
from tests.integration.test_analytics_rollups import ADMIN, MUTATIONS, fold

pytestmark = pytest.mark.db

# Replies leave the cells when they run again, and come back when they finish; refused sends are
# withdrawn and recorded again.
MORE_MUTATIONS = [
    """delete from private.telemetry_events
        where id in (select id from private.telemetry_events
                      where name = 'agent.chat.rate_limited' order by id limit 7)""",
    """insert into private.telemetry_events (name, user_id, deployment_id, created_at)
       select 'agent.chat.rate_limited', user_id, id, now() - interval '26 hours'
         from public.agent_deployments order by id limit 4""",
    """update private.telemetry_events set created_at = created_at - interval '5 hours'
        where id in (select id from private.telemetry_events
                      where name = 'agent.chat.rate_limited' order by id desc limit 3)""",
    """update public.agent_messages set status = 'running', completed_at = null,
              error_code = null, latency_ms = null, ttft_ms = null
        where id in (select id from public.agent_messages
                      where role = 'assistant' and status = 'completed' order by id limit 25)""",
    """update public.agent_messages set status = 'completed', completed_at = now(),
              latency_ms = 61, ttft_ms = 7
        where id in (select id from public.agent_messages
                      where role = 'assistant' and status = 'running' order by id limit 10)""",
]


def cells(
    conn: psycopg.Connection, *, folded_only: bool = False
) -> dict[str, list[tuple[Any, ...]]]:
    """What the reports read, summed by key (the views: the cells' rows and the changes' not
    folded yet), or with `folded_only` the cell tables alone."""
    hours, days = (
        ("analytics_reply_hour_cells", "analytics_reply_day_cells")
        if folded_only
        else ("analytics_reply_hours", "analytics_reply_days")
    )
    sums = (
        "sum(replies)::int, sum(completed)::int, sum(failed)::int, sum(retries)::int,"
        " sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint, sum(rate_limited)::int,"
        " sum(latency), sum(ttft)"
    )
    return {
        "hours": conn.execute(
            f"select hour, {sums} from private.{hours} group by 1"
            " having sum(replies) <> 0 order by 1"
        ).fetchall(),
        "days": conn.execute(
            f"select day, agent_id, {sums} from private.{days} group by 1, 2"
            " having sum(replies) <> 0 order by 1, 2"
        ).fetchall(),
    }


def pending_changes(conn: psycopg.Connection, *, replies_only: bool = False) -> int:
    row = conn.execute(
        "select (select count(*) from private.analytics_reply_changes),"
        " (select count(*) from private.analytics_hourly_changes)"
    ).fetchone()
    assert row is not None
    return int(row[0]) if replies_only else int(row[0]) + int(row[1])


def metrics(conn: psycopg.Connection, function: str, *args: Any) -> dict[str, Any]:
    placeholders = ", ".join(["%s"] * len(args))
    row = conn.execute(f"select private.{function}({placeholders})", args).fetchone()
    assert row is not None
    return dict(row[0])


def assert_close(cells_metric: dict[str, Any], exact_metric: dict[str, Any], where: str) -> None:
    for key in ("latency_ms", "ttft_ms"):
        for name, exact in exact_metric[key].items():
            estimate = cells_metric[key][name]
            if exact is None:
                assert estimate is None, (where, key, name)
                continue
            # Both sides are rounded to 0.1 ms.
            bound = float(exact) * histogram.MAX_RELATIVE_ERROR + 0.1
            assert abs(estimate - float(exact)) <= bound, (where, key, name, estimate, exact)
    counts = {k: v for k, v in cells_metric.items() if k not in ("latency_ms", "ttft_ms")}
    exact_counts = {k: v for k, v in exact_metric.items() if k not in ("latency_ms", "ttft_ms")}
    assert counts == exact_counts, where


def assert_reports_agree(conn: psycopg.Connection, start: str, end: str, tz: str) -> None:
    estimated = resolve_histograms(
        metrics(conn, "marketplace_metrics_cells", start, end, tz)
        | {"percentiles": {"method": "histogram"}}
    )
    exact = metrics(conn, "marketplace_metrics_rollup", start, end, tz)
    assert estimated["range"] == exact["range"] and estimated["filters"] == exact["filters"]
    assert_close(estimated["overall"], exact["overall"], f"{tz} overall")
    assert [a["slug"] for a in estimated["agents"]] == [a["slug"] for a in exact["agents"]]
    for got, want in zip(estimated["agents"], exact["agents"], strict=True):
        assert_close(got, want, f"{tz} {want['slug']}")
    assert [d["day"] for d in estimated["days"]] == [d["day"] for d in exact["days"]]
    for got, want in zip(estimated["days"], exact["days"], strict=True):
        assert_close(got, want, f"{tz} {want['day']}")
    assert exact["overall"]["completed"] > 0 and exact["overall"]["latency_ms"]["p95"] is not None


def test_sql_buckets_are_the_python_buckets(conn: psycopg.Connection) -> None:
    values = [*range(0, 300), *[2**e + d for e in range(6, 31) for d in (-1, 0, 1)], 2**31 - 1]
    rows = conn.execute(
        "select v, private.analytics_bucket(v) from unnest(%s::integer[]) v", (values,)
    ).fetchall()
    assert [(v, b) for v, b in rows] == [(v, histogram.bucket(v)) for v in values]
    assert conn.execute("select private.analytics_bucket(null)").fetchone() == (None,)


def test_cells_equal_a_recount_and_the_reports_agree(db_url: str, conn: psycopg.Connection) -> None:
    generate(
        db_url,
        Fixture(messages=6000, conversations=600, deployments=80, users=40, agents=20),
        triggers=True,
    )
    conn.execute("select set_config('request.jwt.claims', %s, false)", (ADMIN,))
    # The finishes only left changes; half the mutations are folded into the cells, the other
    # half wait as changes on top of them.
    assert pending_changes(conn) > 0
    for statement in MUTATIONS:
        with conn.transaction():
            conn.execute(statement)
    waiting = pending_changes(conn)
    assert fold(conn) == waiting and pending_changes(conn) == 0
    for statement in MORE_MUTATIONS:
        with conn.transaction():
            conn.execute(statement)
    assert pending_changes(conn) > 0
    running = conn.execute(
        "select count(*) from private.analytics_replies where status = 'running'"
    ).fetchone()
    assert running == (15,)

    kept = cells(conn)
    assert kept["hours"] and kept["days"]
    assert cells(conn, folded_only=True) != kept  # the views add what is not folded yet
    for tz in ("UTC", "Asia/Tokyo"):
        assert_reports_agree(
            conn,
            str(datetime.now(UTC).date() - timedelta(days=95)),
            str(datetime.now(UTC).date() + timedelta(days=1)),
            tz,
        )
    fold(conn)
    assert pending_changes(conn) == 0
    assert cells(conn, folded_only=True) == kept == cells(conn)
    conn.execute("select private.analytics_rebuild_reply_cells()")
    assert cells(conn) == kept and cells(conn, folded_only=True) == kept
    conn.execute("select private.analytics_rebuild()")
    assert cells(conn) == kept and pending_changes(conn) == 0

    today = datetime.now(UTC).date()
    start, end = str(today - timedelta(days=95)), str(today + timedelta(days=1))
    for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
        assert_reports_agree(conn, start, end, tz)
    # A range whose ends cut UTC days mid-range (New York's midnight is 04:00 or 05:00 UTC).
    assert_reports_agree(
        conn, str(today - timedelta(days=40)), str(today - timedelta(days=3)), "America/New_York"
    )


def test_one_fold_at_a_time_and_a_change_committed_during_a_fold_is_folded_next_time(
    db_url: str, conn: psycopg.Connection
) -> None:
    generate(
        db_url,
        Fixture(messages=400, conversations=40, deployments=10, users=5, agents=4),
        triggers=True,
    )
    before = pending_changes(conn)
    assert before > 0
    with psycopg.connect(db_url, autocommit=True) as other:
        with conn.transaction():
            assert fold(conn) == before  # holds the fold's lock and the moved rows until commit
            assert fold(other) == 0  # another fold meanwhile returns at once, moving nothing
            other.execute(
                """insert into private.telemetry_events (name, user_id, deployment_id, created_at)
                   select 'agent.chat.rate_limited', user_id, id, now()
                     from public.agent_deployments order by id limit 1"""
            )
        # committed during the fold: left for the next one
        assert pending_changes(conn) == pending_changes(conn, replies_only=True) == 1
        assert fold(other) == 1
    assert pending_changes(conn) == 0
    kept = cells(conn, folded_only=True)
    conn.execute("select private.analytics_rebuild_reply_cells()")
    assert cells(conn, folded_only=True) == kept


def test_the_admin_api_uses_the_cells_for_large_unfiltered_ranges(
    db_url: str, conn: psycopg.Connection
) -> None:
    generate(
        db_url,
        Fixture(messages=50_000, conversations=2_000, deployments=200, users=100, agents=10),
    )
    conn.execute("select set_config('request.jwt.claims', %s, false)", (ADMIN,))
    today = datetime.now(UTC).date()
    start, end = str(today - timedelta(days=95)), str(today)
    agent = conn.execute(
        "select slug from public.marketplace_agents order by deploy_count desc limit 1"
    ).fetchone()
    assert agent is not None

    large = metrics(conn, "marketplace_metrics", start, end, "Europe/Berlin")
    assert large["percentiles"] == {"method": "histogram"}
    assert large["overall"]["completed"] > 20_000
    assert "latency_hist" in large["overall"] and "latency_ms" not in large["overall"]

    filtered = metrics(conn, "marketplace_metrics", start, end, "Europe/Berlin", agent[0])
    assert filtered["percentiles"] == {"method": "exact"}
    assert filtered["overall"]["latency_ms"]["p50"] is not None
    half_hour = metrics(conn, "marketplace_metrics", start, end, "Asia/Kolkata")
    assert half_hour["percentiles"]["method"] == "exact"
    short = metrics(conn, "marketplace_metrics", str(today - timedelta(days=2)), end, "UTC")
    assert short["percentiles"]["method"] == "exact"

    # What the API answers: the percentiles from the histograms, within the bound of the exact.
    resolved = resolve_histograms(large)
    exact = metrics(conn, "marketplace_metrics_rollup", start, end, "Europe/Berlin")
    assert_close(resolved["overall"], exact["overall"], "overall")
    assert json.dumps(resolved).count("_hist") == 0
