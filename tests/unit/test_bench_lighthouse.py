"""`agentmarket bench lighthouse`: what it reads from a Lighthouse report and how it writes the
docs/benchmarks.md section (a real run needs Chromium and a built client: ./scripts/lighthouse)."""

from __future__ import annotations

from typing import Any

import pytest

from agentmarket.cli import build_parser
from agentmarket.devtools import bench_lighthouse
from agentmarket.devtools.bench_lighthouse import TITLE, lighthouse_report, parse_report


def audit(score: float | None, title: str, **extra: Any) -> dict[str, Any]:
    return {"score": score, "title": title, "scoreDisplayMode": "numeric", **extra}


def lhr(performance: float, accessibility: float = 1.0) -> dict[str, Any]:
    """A Lighthouse result with the fields the runner reads."""
    return {
        "categories": {
            "performance": {
                "score": performance,
                "auditRefs": [
                    {"id": "largest-contentful-paint", "weight": 25},
                    {"id": "render-blocking-resources", "weight": 0},
                    {"id": "mainthread-work-breakdown", "weight": 0},
                ],
            },
            "accessibility": {
                "score": accessibility,
                "auditRefs": [
                    {"id": "color-contrast", "weight": 7},
                    {"id": "image-alt", "weight": 10},
                ],
            },
            "best-practices": {"score": 1.0, "auditRefs": []},
        },
        "audits": {
            "first-contentful-paint": audit(0.9, "FCP", displayValue="1.2\xa0s"),
            "largest-contentful-paint": audit(0.5, "LCP", displayValue="3.1\xa0s"),
            "total-blocking-time": audit(1, "TBT", displayValue="40\xa0ms"),
            "cumulative-layout-shift": audit(1, "CLS", displayValue="0"),
            "speed-index": audit(1, "SI", displayValue="1.5\xa0s"),
            "render-blocking-resources": audit(
                0.3,
                "Eliminate render-blocking resources",
                displayValue="Potential savings of 300\xa0ms",
                details={
                    "type": "opportunity",
                    "overallSavingsMs": 300,
                    "items": [{"url": "http://127.0.0.1:8000/assets/index-abc.css"}],
                },
            ),
            "mainthread-work-breakdown": audit(
                0.2, "Minimize main-thread work", displayValue="3.0\xa0s"
            ),
            "color-contrast": audit(
                0,
                "Background and foreground colors do not have a sufficient contrast ratio.",
                scoreDisplayMode="binary",
            ),
            "image-alt": audit(
                None, "Image elements have [alt] attributes", scoreDisplayMode="notApplicable"
            ),
            "network-requests": {
                "details": {
                    "items": [
                        {"url": "http://x/", "resourceType": "Document", "transferSize": 1000},
                        {"url": "http://x/a.js", "resourceType": "Script", "transferSize": 30_720},
                        {"url": "http://x/b.js", "resourceType": "Script", "transferSize": 10_240},
                    ]
                }
            },
        },
    }


def test_a_report_is_reduced_to_scores_metrics_and_costs() -> None:
    run = parse_report(lhr(0.934, 0.9))
    assert run.scores == {"performance": 93, "accessibility": 90, "best-practices": 100}
    assert run.metrics["Largest Contentful Paint"] == "3.1 s"
    assert run.script_bytes == 40_960
    assert run.total_bytes == 41_960
    assert run.requests == 3
    assert run.costs == [
        "performance: Eliminate render-blocking resources (about 300 ms, Potential savings of "
        "300 ms): /assets/index-abc.css",
        "accessibility: Background and foreground colors do not have a sufficient contrast ratio.",
        "performance: Minimize main-thread work (3.0 s)",
    ]


def test_the_section_names_its_command_scores_targets_and_costs() -> None:
    runs = [parse_report(lhr(p)) for p in (0.91, 0.95, 0.88)]
    results = {
        "url": "http://127.0.0.1:1234/",
        "form_factor": "mobile",
        "runs": [r.scores for r in runs],
        "median": runs[0],
    }
    section = lighthouse_report("./scripts/lighthouse --runs 3 --write", results)
    assert section.startswith(f"## {TITLE}\n")
    assert "./scripts/lighthouse --runs 3 --write" in section
    assert "| performance | 91 | ≥ 90 | 91, 95, 88 |" in section
    assert "| accessibility | 100 | ≥ 95 |" in section
    assert "| JavaScript transferred (compressed) | 40.0 KiB |" in section
    assert "Eliminate render-blocking resources" in section


def test_the_median_run_is_the_middle_one_by_performance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reports = iter([lhr(0.80), lhr(0.97), lhr(0.92)])
    monkeypatch.setattr(bench_lighthouse, "_lighthouse", lambda *_: next(reports))

    class Page:
        status_code = 200
        headers = {"content-type": "text/html; charset=utf-8"}  # noqa: RUF012

    monkeypatch.setattr("agentmarket.devtools.bench_lighthouse.httpx.get", lambda *_, **__: Page())
    results = bench_lighthouse.run_lighthouse(None, runs=3, url="http://page/")  # type: ignore[arg-type]
    assert [r["performance"] for r in results["runs"]] == [80, 97, 92]
    assert results["median"].scores["performance"] == 92


def test_the_cli_has_the_scenario() -> None:
    args = build_parser().parse_args(
        ["bench", "lighthouse", "--runs", "5", "--form-factor", "desktop"]
    )
    assert (args.scenario, args.runs, args.form_factor) == ("lighthouse", 5, "desktop")
