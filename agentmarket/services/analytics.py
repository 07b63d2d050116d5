"""Admin analytics (docs/api.md#admin-analytics): the marketplace's stats and the replies'
metrics for a range of days in a time zone.

Each report is one statement as the caller (`private.marketplace_stats` /
`private.marketplace_metrics`, which refuse anyone but an admin, AMADM → 403 `admin_only`). The
range and the time zone are checked here first (`resolve_window`, 422 `invalid_range` /
`invalid_timezone` with pointers); the database checks the same rules again. The CSV form is one
long table (`section,day,agent,metric,value`) written row by row (`csv_lines`), with cells a
spreadsheet would execute neutralised (`csv_cell`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agentmarket.core.errors import FieldError, InvalidRange, InvalidTimezone
from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.domain import histogram
from agentmarket.domain.models import AnalyticsQuery, MarketplaceMetrics, MarketplaceStats

__all__ = [
    "CSV_HEADER",
    "DEFAULT_DAYS",
    "MAX_SPAN_DAYS",
    "Window",
    "csv_cell",
    "csv_filename",
    "csv_lines",
    "marketplace_metrics",
    "marketplace_stats",
    "metrics_rows",
    "resolve_histograms",
    "resolve_window",
    "stats_rows",
]

DEFAULT_DAYS: Final = 30  # the default range: the last 30 days, today included
MAX_SPAN_DAYS: Final = 366  # `to - from` at most this many days
CSV_HEADER: Final = ("section", "day", "agent", "metric", "value")
# What a spreadsheet may take for a formula (OWASP "CSV injection").
_FORMULA_LEADS: Final = ("=", "+", "-", "@", "\t", "\r")
_FRACTIONS: Final = (0.5, 0.95, 0.99)

Row = tuple[str, str, str, str, Any]


@dataclass(frozen=True)
class Window:
    """The checked range: calendar days [start, end] in `tz`."""

    start: date
    end: date
    tz: str


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidTimezone(
            errors=[FieldError("/query/tz", "is not a known IANA time zone name")]
        ) from None


def resolve_window(params: AnalyticsQuery, *, now: datetime | None = None) -> Window:
    """The range to report: `from`/`to` as given, else the last DEFAULT_DAYS days ending today
    in `tz` (a missing `from` is DEFAULT_DAYS - 1 days before `to`). 422 `invalid_timezone` for
    an unknown zone, `invalid_range` when `from` > `to` or `to - from` > MAX_SPAN_DAYS days."""
    zone = _zone(params.tz)
    today = (now or datetime.now(zone)).astimezone(zone).date()
    end = params.to or today
    start = params.from_ or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise InvalidRange(errors=[FieldError("/query/from", "must be on or before to")])
    if (end - start).days > MAX_SPAN_DAYS:
        raise InvalidRange(
            errors=[FieldError("/query/to", f"must be at most {MAX_SPAN_DAYS} days after from")]
        )
    return Window(start=start, end=end, tz=params.tz)


def _params(params: AnalyticsQuery, window: Window) -> dict[str, Any]:
    return {
        "from": window.start,
        "to": window.end,
        "tz": window.tz,
        "agent": params.agent,
        "category": params.category,
        "kind": params.kind.value if params.kind else None,
    }


async def _report(db: CallerSession, statement: str, params: AnalyticsQuery) -> Any:
    window = resolve_window(params)
    rows = await db.run(statement, _params(params, window))
    return rows[0]["report"]


async def marketplace_stats(*, db: CallerSession, params: AnalyticsQuery) -> MarketplaceStats:
    """Deployments, conversations, user messages and chatting users per day (every day of the
    range), active deployments and agents now, popular agents, feedback and survey results."""
    return MarketplaceStats.model_validate(
        await _report(db, query("analytics_marketplace_stats"), params)
    )


async def marketplace_metrics(*, db: CallerSession, params: AnalyticsQuery) -> MarketplaceMetrics:
    """Replies, errors (by code), retries, tokens, rate-limit rejections and latency / time to
    first token percentiles: overall, per agent and per day (every day of the range)."""
    report = await _report(db, query("analytics_marketplace_metrics"), params)
    return MarketplaceMetrics.model_validate(resolve_histograms(report))


def _percentiles(text: str) -> dict[str, float | None]:
    values = histogram.percentiles(histogram.counts(text), _FRACTIONS)
    return {
        name: None if value is None else round(value, 1)
        for name, value in zip(("p50", "p95", "p99"), values, strict=True)
    }


def resolve_histograms(report: dict[str, Any]) -> dict[str, Any]:
    """A report from the rollups' cells (`percentiles.method` = histogram) carries each metric's
    durations as histograms (`latency_hist`, `ttft_hist`): turn them into the p50/p95/p99 the
    exact report gives (`latency_ms`, `ttft_ms`), and state the estimates' bound (the buckets'
    width, `histogram.MAX_RELATIVE_ERROR`; 0 for an exact report)."""
    percentiles = report.setdefault("percentiles", {"method": "exact"})
    if percentiles.get("method") != "histogram":
        percentiles["max_relative_error"] = 0
        return report
    percentiles["max_relative_error"] = histogram.MAX_RELATIVE_ERROR
    for metric in (report["overall"], *report["agents"], *report["days"]):
        metric["latency_ms"] = _percentiles(metric.pop("latency_hist"))
        metric["ttft_ms"] = _percentiles(metric.pop("ttft_hist"))
    return report


# --- CSV -----------------------------------------------------------------------------------------


def csv_filename(kind: str, report: MarketplaceStats | MarketplaceMetrics) -> str:
    """`marketplace-stats-2026-11-01-to-2026-11-30.csv` (kind `stats` or `metrics`)."""
    return f"marketplace-{kind}-{report.range.from_}-to-{report.range.to}.csv"


def csv_cell(value: Any) -> str | int | float:
    """One cell: numbers stay numbers (a negative NPS is `-20`, not text), None is empty, and
    text that a spreadsheet would run as a formula gets a leading `'`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    text = value.isoformat() if isinstance(value, date) else str(value)
    return "'" + text if text.startswith(_FORMULA_LEADS) else text


def csv_lines(rows: Iterable[Row]) -> Iterator[str]:
    """RFC 4180 CSV (CRLF line ends, quoting where needed), the header first, one line per
    row as it comes: a streaming response's body."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([csv_cell(cell) for cell in row])
        yield buffer.getvalue()


def _flat(prefix: str, values: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat(f"{name}.", value)
        else:
            yield name, value


def _section(
    section: str, values: dict[str, Any], *, day: str = "", agent: str = ""
) -> Iterator[Row]:
    for metric, value in _flat("", values):
        yield section, day, agent, metric, value


def stats_rows(report: MarketplaceStats) -> Iterator[Row]:
    """The stats as `section,day,agent,metric,value` rows."""
    data = report.model_dump(mode="json", by_alias=True)
    for section in ("range", "filters", "now", "totals"):
        yield from _section(section, data[section])
    for day in data["days"]:
        yield from _section("days", {k: v for k, v in day.items() if k != "day"}, day=day["day"])
    for agent in data["popular_agents"]:
        yield from _section("popular_agents", agent, agent=agent["slug"])
    yield from _section("feedback", data["feedback"])
    yield from _section("survey", data["survey"])


def metrics_rows(report: MarketplaceMetrics) -> Iterator[Row]:
    """The metrics as `section,day,agent,metric,value` rows (errors by code and percentiles as
    `errors_by_code.<code>`, `latency_ms.p95`, …)."""
    data = report.model_dump(mode="json", by_alias=True)
    for section in ("range", "filters", "percentiles"):
        yield from _section(section, data[section])
    yield from _section("overall", data["overall"])
    for agent in data["agents"]:
        yield from _section("agents", agent, agent=agent["slug"])
    for day in data["days"]:
        yield from _section("days", {k: v for k, v in day.items() if k != "day"}, day=day["day"])
