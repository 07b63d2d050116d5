"""`agentmarket bench`: measured, never asserted. Results go to docs/benchmarks.md with the command.

catalog: GET /api/marketplace/agents through the real server process (uvicorn, one worker) at N
concurrent clients, next to the same query run directly with psycopg as anon (the floor the
HTTP layer adds to).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

from agentmarket import paths
from agentmarket.config import Settings

CATALOG_QUERY = (
    "select id, slug, name, tagline, description, category, tags, kind, pricing_model,"
    " price_cents, currency, icon, featured, deploy_count, created_at, updated_at, total_count"
    " from public.search_agents(q => %s, category => null, pricing => null, tag => null,"
    " sort => null, max_results => 20, skip => 0)"
)


@dataclass(frozen=True)
class Result:
    name: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int

    @classmethod
    def from_latencies(
        cls, name: str, concurrency: int, seconds: float, latencies_ms: list[float], errors: int
    ) -> Result:
        ordered = sorted(latencies_ms)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

        return cls(
            name,
            concurrency,
            len(ordered),
            seconds,
            statistics.median(ordered),
            pct(95),
            pct(99),
            errors,
        )

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def row(self) -> str:
        return (
            f"| {self.name} | {self.concurrency} | {self.requests} | {self.p50_ms:.2f} | "
            f"{self.p95_ms:.2f} | {self.p99_ms:.2f} | {self.throughput:.0f} | {self.errors} |"
        )


async def _drive(
    name: str, concurrency: int, total: int, one: Callable[[int], Awaitable[bool]]
) -> Result:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            ok = await one(i)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += 0 if ok else 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result.from_latencies(
        name, concurrency, time.perf_counter() - started, latencies, errors
    )


QUERIES = [None, "support", "notes", "sql", None, "writer", "coach", None]

# wrk (C, one connection per client) keeps the load generator's own cost out of the numbers;
# this script cycles through the same queries and prints wrk's percentiles as JSON.
WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "errors": %%d, "p50": %%d, "p95": %%d, "p99": %%d}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def catalog_paths() -> list[str]:
    return ["/api/marketplace/agents" + (f"?q={q}" if q else "") for q in QUERIES]


def bench_wrk(base_url: str, concurrency: int, seconds: int, workdir: Path) -> Result:
    script = workdir / "catalog.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in catalog_paths()))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), base_url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return Result(
        "HTTP GET /api/marketplace/agents (wrk)",
        concurrency,
        data["requests"],
        data["duration_us"] / 1e6,
        data["p50"] / 1000,
        data["p95"] / 1000,
        data["p99"] / 1000,
        data["errors"],
    )


async def bench_http(base_url: str, concurrency: int, total: int) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(i: int) -> bool:
            q = QUERIES[i % len(QUERIES)]
            response = await client.get("/api/marketplace/agents", params={"q": q} if q else None)
            return response.status_code == 200

        for i in range(50):  # warm up connections and caches
            await one(i)
        return await _drive("HTTP GET /api/marketplace/agents (httpx)", concurrency, total, one)


async def bench_direct(database_url: str, concurrency: int, total: int) -> Result:
    conns = [
        await psycopg.AsyncConnection.connect(database_url, autocommit=True, prepare_threshold=None)
        for _ in range(concurrency)
    ]
    free: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    async def one(i: int) -> bool:
        conn = await free.get()
        try:
            async with conn.transaction():
                await conn.execute(
                    "select set_config('role', 'anon', true),"
                    " set_config('request.jwt.claims', '{\"role\":\"anon\"}', true)"
                )
                cur = await conn.execute(CATALOG_QUERY, (QUERIES[i % len(QUERIES)],))
                await cur.fetchall()
            return True
        finally:
            free.put_nowait(conn)

    try:
        for i in range(50):
            await one(i)
        return await _drive("psycopg, same query as anon", concurrency, total, one)
    finally:
        for c in conns:
            await c.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_server(settings: Settings) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmarket.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError("the server did not become ready (is the database migrated?)")


def run_catalog(
    settings: Settings, *, concurrency: int, requests: int, seconds: int
) -> list[Result]:
    """The endpoint (wrk when installed, else an httpx client) and the same query via psycopg."""
    process, base = _start_server(settings)
    results: list[Result] = []
    try:
        if shutil.which("wrk"):
            with tempfile.TemporaryDirectory() as tmp:
                bench_wrk(base, concurrency, 1, Path(tmp))  # warm-up
                results.append(bench_wrk(base, concurrency, seconds, Path(tmp)))
        results.append(asyncio.run(bench_http(base, concurrency, requests)))
    finally:
        process.terminate()
        process.wait(timeout=10)
    results.append(
        asyncio.run(bench_direct(settings.database_url.get_secret_value(), concurrency, requests))
    )
    return results


def report(title: str, command: str, results: list[Result], notes: list[str]) -> str:
    lines = [
        f"## {title}",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; load generator and server "
        "share the machine.",
        "",
        "```",
        command,
        "```",
        "",
        "| what | concurrency | requests | p50 ms | p95 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|---|",
        *(r.row() for r in results),
        "",
        *notes,
        "",
    ]
    return "\n".join(lines)


def write_section(section: str, title: str) -> Path:
    """Replace the section with this title in docs/benchmarks.md (or add it)."""
    target = paths.project_root() / "docs" / "benchmarks.md"
    header = "# Benchmarks\n\nProduced by `agentmarket bench`; each section names its command.\n\n"
    text = target.read_text(encoding="utf-8") if target.exists() else header
    start = text.find(f"## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    target.write_text(text, encoding="utf-8")
    return target


def as_json(results: list[Result]) -> str:
    return json.dumps(
        [
            {
                "name": r.name,
                "concurrency": r.concurrency,
                "requests": r.requests,
                "p50_ms": round(r.p50_ms, 3),
                "p95_ms": round(r.p95_ms, 3),
                "p99_ms": round(r.p99_ms, 3),
                "throughput": round(r.throughput, 1),
                "errors": r.errors,
            }
            for r in results
        ],
        indent=2,
    )
