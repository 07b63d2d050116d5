"""`agentmarket bench lighthouse`: Lighthouse (npm `lighthouse`, pinned) with Debian's Chromium,
headless, on the web client's marketplace page served by a real `agentmarket serve` process.

Lighthouse is installed by `./scripts/lighthouse` into `.data/tools/lighthouse` (not in
web/package.json: the client's own lock stays small); `AGENTMARKET_LIGHTHOUSE` and `CHROME_PATH`
override where it and the browser are. Each run is Lighthouse's default mobile audit (simulated
slow 4G and a 4x slower CPU) unless `--form-factor desktop`; the section reports the median run
(by performance score) with its metrics and what Lighthouse says costs the most.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from agentmarket.core import paths
from agentmarket.core.config import Settings

__all__ = [
    "CATEGORIES",
    "LIGHTHOUSE_VERSION",
    "TITLE",
    "LighthouseRun",
    "lighthouse_bin",
    "lighthouse_json",
    "lighthouse_report",
    "parse_report",
    "run_lighthouse",
]

TITLE = "Web client: Lighthouse on the marketplace page"
LIGHTHOUSE_VERSION = "12.2.3"  # the newest that runs on Debian's Node 20 (13 wants Node 22)
CATEGORIES = ("performance", "accessibility", "best-practices")
TARGETS = {"performance": 90, "accessibility": 95}
METRICS = (
    ("first-contentful-paint", "First Contentful Paint"),
    ("largest-contentful-paint", "Largest Contentful Paint"),
    ("total-blocking-time", "Total Blocking Time"),
    ("cumulative-layout-shift", "Cumulative Layout Shift"),
    ("speed-index", "Speed Index"),
)
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def lighthouse_bin() -> Path:
    env = os.environ.get("AGENTMARKET_LIGHTHOUSE")
    if env:
        return Path(env)
    return (
        paths.project_root()
        / ".data"
        / "tools"
        / "lighthouse"
        / "node_modules"
        / ".bin"
        / ("lighthouse")
    )


def chrome_path() -> str:
    return os.environ.get("CHROME_PATH", "/usr/bin/chromium")


@dataclass
class LighthouseRun:
    """One Lighthouse report, reduced to what the section shows."""

    scores: dict[str, int]  # 0-100 per category
    metrics: dict[str, str]  # display values
    costs: list[str] = field(default_factory=list)  # failed audits, the most costly first
    script_bytes: int = 0  # JavaScript transferred (compressed)
    total_bytes: int = 0
    requests: int = 0


def _where(audit: dict[str, Any]) -> str:
    """The path of the resource an audit blames most, if it names one."""
    items = (audit.get("details") or {}).get("items") or []
    url = items[0].get("url") if items and isinstance(items[0], dict) else None
    if not isinstance(url, str) or "://" not in url:
        return ""
    return ": " + (
        "/" + url.split("://", 1)[1].split("/", 1)[-1] if "/" in url.split("://", 1)[1] else url
    )


def _failed(lhr: dict[str, Any], category: str) -> list[tuple[float, str]]:
    """The category's audits that did not pass, weighted (the costlier first); the metrics and
    the opportunities are reported on their own."""
    metrics = {key for key, _ in METRICS}
    out: list[tuple[float, str]] = []
    for ref in lhr["categories"][category]["auditRefs"]:
        audit = lhr["audits"].get(ref["id"], {})
        score = audit.get("score")
        if (
            score is None
            or score >= 0.9
            or ref["id"] in metrics
            or (audit.get("details") or {}).get("type") == "opportunity"
            or audit.get("scoreDisplayMode") in ("notApplicable", "manual", "informative")
        ):
            continue
        display = audit.get("displayValue")
        label = f"{category}: {audit.get('title', ref['id'])}" + (
            f" ({display})" if display else ""
        )
        out.append((ref.get("weight", 0) * (1 - score), label + _where(audit)))
    return out


def _opportunities(lhr: dict[str, Any]) -> list[tuple[float, str]]:
    """Performance opportunities with an estimated saving, the largest first."""
    out: list[tuple[float, str]] = []
    for audit in lhr["audits"].values():
        details = audit.get("details") or {}
        if details.get("type") != "opportunity":
            continue
        saving = float(details.get("overallSavingsMs") or 0)
        if saving >= 50:
            display = audit.get("displayValue")
            out.append(
                (
                    saving,
                    f"performance: {audit['title']} (about {saving:.0f} ms"
                    + (f", {display}" if display else "")
                    + ")"
                    + _where(audit),
                )
            )
    return out


def parse_report(lhr: dict[str, Any]) -> LighthouseRun:
    scores = {c: round(100 * (lhr["categories"][c]["score"] or 0)) for c in CATEGORIES}
    metrics = {
        name: str(lhr["audits"].get(key, {}).get("displayValue", "n/a")).replace("\xa0", " ")
        for key, name in METRICS
    }
    costs = sorted(_opportunities(lhr), reverse=True) + sorted(
        [item for c in CATEGORIES for item in _failed(lhr, c)], reverse=True
    )
    items = (lhr["audits"].get("network-requests", {}).get("details") or {}).get("items", [])
    return LighthouseRun(
        scores=scores,
        metrics=metrics,
        costs=list(dict.fromkeys(label.replace("\xa0", " ") for _, label in costs)),
        script_bytes=sum(
            int(i.get("transferSize") or 0) for i in items if i.get("resourceType") == "Script"
        ),
        total_bytes=sum(int(i.get("transferSize") or 0) for i in items),
        requests=len(items),
    )


def _lighthouse(url: str, out: Path, form_factor: str) -> dict[str, Any]:
    binary = lighthouse_bin()
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run ./scripts/lighthouse (it installs it)")
    command = [
        str(binary),
        url,
        "--output=json",
        f"--output-path={out}",
        "--quiet",
        f"--only-categories={','.join(CATEGORIES)}",
        f"--chrome-flags={' '.join(CHROME_FLAGS)}",
    ]
    if form_factor == "desktop":
        command.append("--preset=desktop")
    subprocess.run(
        command,
        env={**os.environ, "CHROME_PATH": chrome_path()},
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=300,
    )
    lhr: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    if lhr.get("runtimeError"):
        raise RuntimeError(f"lighthouse: {lhr['runtimeError']}")
    return lhr


@contextmanager
def _served(settings: Settings, url: str | None) -> Iterator[str]:
    """The page's URL: `url` as given, or `/` of a server started for the run."""
    if url is not None:
        yield url
        return
    from agentmarket.devtools.bench import _start_server  # one helper for every bench's server

    process, base = _start_server(settings)
    try:
        yield f"{base}/"
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_lighthouse(
    settings: Settings, *, runs: int, url: str | None = None, form_factor: str = "mobile"
) -> dict[str, Any]:
    """`runs` audits of the marketplace page; the median run (by performance) and every run's
    scores."""
    with _served(settings, url) as page, tempfile.TemporaryDirectory() as tmp:
        probe = httpx.get(page, headers={"Accept": "text/html"}, timeout=10)
        if probe.status_code != 200 or "text/html" not in probe.headers.get("content-type", ""):
            raise RuntimeError(
                f"{page} is not the web client ({probe.status_code}): build it first "
                "(cd web && npm ci && npm run build)"
            )
        reports = [
            parse_report(_lighthouse(page, Path(tmp) / f"run-{i}.json", form_factor))
            for i in range(runs)
        ]
    ordered = sorted(reports, key=lambda r: r.scores["performance"])
    median = ordered[(len(ordered) - 1) // 2]
    return {
        "url": page,
        "form_factor": form_factor,
        "runs": [r.scores for r in reports],
        "median": median,
        "spread": {
            c: (min(r.scores[c] for r in reports), max(r.scores[c] for r in reports))
            for c in CATEGORIES
        },
        "median_scores": {c: statistics.median(r.scores[c] for r in reports) for c in CATEGORIES},
    }


def lighthouse_json(results: dict[str, Any]) -> str:
    median: LighthouseRun = results["median"]
    return json.dumps(
        {
            "url": results["url"],
            "form_factor": results["form_factor"],
            "runs": results["runs"],
            "median_run": {
                "scores": median.scores,
                "metrics": median.metrics,
                "costs": median.costs,
                "script_bytes": median.script_bytes,
                "total_bytes": median.total_bytes,
                "requests": median.requests,
            },
        },
        indent=2,
    )


def lighthouse_report(command: str, results: dict[str, Any]) -> str:
    median: LighthouseRun = results["median"]
    runs = len(results["runs"])
    lines = [
        f"## {TITLE}",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores: Lighthouse {LIGHTHOUSE_VERSION} with Debian's Chromium "
        f"(headless), {results['form_factor']} audit (Lighthouse's defaults: "
        + (
            "simulated slow 4G, 4x CPU slowdown"
            if results["form_factor"] == "mobile"
            else "desktop preset, simulated fast connection"
        )
        + f"), {runs} run{'s' if runs != 1 else ''}, the median run shown; the page is `/` "
        "(the marketplace) served by `agentmarket serve` from web/dist, its catalog from the "
        "seeded database.",
        "",
        "```",
        command,
        "```",
        "",
        "| category | score | target | every run |",
        "|---|---|---|---|",
    ]
    for category in CATEGORIES:
        target = TARGETS.get(category)
        every = ", ".join(str(r[category]) for r in results["runs"])
        lines.append(
            f"| {category} | {median.scores[category]} | {f'≥ {target}' if target else '—'} "
            f"| {every} |"
        )
    lines += [
        "",
        "| metric (median run) | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in median.metrics.items()),
        f"| requests / transferred | {median.requests} / {median.total_bytes / 1024:.1f} KiB |",
        f"| JavaScript transferred (compressed) | {median.script_bytes / 1024:.1f} KiB |",
        "",
    ]
    if median.costs:
        lines += [
            "What Lighthouse says costs the most (median run):",
            "",
            *(f"- {cost}" for cost in median.costs[:8]),
            "",
        ]
    else:
        lines += ["Lighthouse reports no failed audit in these categories.", ""]
    return "\n".join(lines)
