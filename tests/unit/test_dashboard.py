"""The Grafana dashboard (ops/grafana/agentmarket.json) and the metrics table of
docs/operations.md agree with what the processes export: every series a panel reads is a
documented metric, and every documented metric is one a process exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agentmarket.core.metrics import PoolCollector
from tests.unit.test_alerts import SCRAPE_SERIES, SELECTOR, exported_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "agentmarket.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# A row of the metrics table: | `name{labels}` | type | ...
ROW = re.compile(r"^\| `([a-z_:][a-z0-9_:]*)(?:\{[^}]*\})?` \| (counter|gauge|histogram)")


def documented() -> dict[str, str]:
    """Metric name (as the table writes it) -> type, from docs/operations.md#metrics."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text[text.index("## Metrics\n") : text.index("\n## ", text.index("## Metrics\n") + 1)]
    return {m.group(1): m.group(2) for line in section.splitlines() if (m := ROW.match(line))}


def documented_series() -> set[str]:
    series: set[str] = set()
    for name, kind in documented().items():
        series.add(name)
        if kind == "histogram":
            series.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return series


def pool_names() -> set[str]:
    collector = PoolCollector("test", lambda: {"pool_size": 2, "pool_available": 1})
    return {family.name for family in collector.collect()}


def test_every_documented_metric_is_exported() -> None:
    names = documented()
    assert len(names) >= 18, names
    exported = exported_names() | pool_names()
    missing = set(names) - exported - {n for n in names if names[n] == "histogram"}
    missing |= {n for n in names if names[n] == "histogram" and f"{n}_bucket" not in exported}
    assert not missing, missing
    for name in ("marketplace_agents_active", "marketplace_conversations_active"):
        assert names[name] == "gauge"


def test_every_dashboard_expression_reads_documented_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    allowed = documented_series() | SCRAPE_SERIES
    read: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(SELECTOR.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            assert names <= allowed, (panel["title"], names - allowed)
            read |= names
    # The dashboard shows what the issue asks for: requests and latency by route, errors, the
    # queue, model attempts, tokens, active agents and conversations, the pools.
    for name in (
        "http_request_duration_seconds_bucket",
        "agent_chat_queue_depth",
        "agent_chat_queue_oldest_seconds",
        "agent_model_attempts_total",
        "agent_chat_token_usage_total",
        "marketplace_agents_active",
        "marketplace_conversations_active",
        "db_pool_connections_in_use",
        "db_pool_requests_waiting",
    ):
        assert name in read, name
