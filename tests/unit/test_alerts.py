"""The alert rules (ops/prometheus/alerts.yml; promtool tests their logic in ./scripts/test) ask
only for series our processes export: a renamed metric would leave an alert that never fires."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import agentmarket.core.metrics  # noqa: F401  (registers the metrics)

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"
# A series selector: a name followed by its matchers or a range.
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[)")
# Series Prometheus itself records for every target.
SCRAPE_SERIES = {"up"}


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_sum", "_count", "_bucket"))
        else:
            names.add(family.name)
    return names


def rule_series() -> dict[str, set[str]]:
    rules = yaml.safe_load(RULES.read_text())
    return {
        rule["alert"]: set(SELECTOR.findall(rule["expr"])) - {"absent"}
        for group in rules["groups"]
        for rule in group["rules"]
    }


def test_every_alert_reads_series_we_export() -> None:
    exported = exported_names() | SCRAPE_SERIES
    series = rule_series()
    assert len(series) >= 8
    missing = {alert: names - exported for alert, names in series.items() if names - exported}
    assert not missing, missing


def test_the_plan_alerts_are_there() -> None:
    assert {
        "ModelFailureRateHigh",
        "DeploymentFailureRateHigh",
        "ChatResponseTimeHigh",
        "RateLimitHitsHigh",
        "HTTPErrorRateHigh",
        "ChatQueueStuck",
        "WorkerDown",
        "WorkersAbsent",
    } <= set(rule_series())
