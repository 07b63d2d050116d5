"""`agentmarket bench`: measured, never asserted. Results go to docs/benchmarks.md with the command.

catalog: GET /api/marketplace/agents through the real server process (uvicorn, one worker, and
`--workers 2`) at N concurrent clients, next to the same query run directly with psycopg as anon
(the floor the HTTP layer adds to).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from agentmarket.core import paths
from agentmarket.core.config import Settings

__all__ = [
    "ChatRun",
    "Result",
    "as_json",
    "bench_chat_streams",
    "bench_chat_throughput",
    "bench_direct",
    "bench_http",
    "bench_wrk",
    "chat_report",
    "report",
    "run_catalog",
    "run_chat",
    "write_section",
]

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
    p90_ms: float
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
            pct(90),
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
            f"{self.p90_ms:.2f} | {self.p95_ms:.2f} | {self.p99_ms:.2f} | "
            f"{self.throughput:.0f} | {self.errors} |"
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
    '{"requests": %%d, "duration_us": %%d, "errors": %%d, "p50": %%d, "p90": %%d, "p95": %%d,'
    .. ' "p99": %%d}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99)))
end
"""


def catalog_paths() -> list[str]:
    return ["/api/marketplace/agents" + (f"?q={q}" if q else "") for q in QUERIES]


def bench_wrk(
    base_url: str,
    concurrency: int,
    seconds: int,
    workdir: Path,
    *,
    runs: int = 1,
    name: str = "HTTP GET /api/marketplace/agents (wrk)",
) -> Result:
    """`wrk -t2 -c<concurrency> -d<seconds>s` `runs` times; each figure is the median over the
    runs (the machine is shared: one run's tail says more about its neighbours than about us)."""
    script = workdir / "catalog.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"{p}"' for p in catalog_paths()))
    data: list[dict[str, int]] = []
    for _ in range(runs):
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "-s", str(script), base_url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        data.append(json.loads(out.strip().splitlines()[-1]))

    def median(key: str) -> float:
        return float(statistics.median(d[key] for d in data))

    return Result(
        name,
        concurrency,
        round(median("requests")),
        median("duration_us") / 1e6,
        median("p50") / 1000,
        median("p90") / 1000,
        median("p95") / 1000,
        median("p99") / 1000,
        sum(d["errors"] for d in data),
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


def _process_env(settings: Settings) -> dict[str, str]:
    """The servers and workers started for a run use their own least-privilege logins, as in
    production (the dev/test defaults when API_DATABASE_URL / WORKER_DATABASE_URL are unset)."""
    return {
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "API_DATABASE_URL": settings.api_url,
        "API_DATABASE_DIRECT_URL": settings.api_direct_url,
        "WORKER_DATABASE_URL": settings.worker_url,
    }


def _start_server(settings: Settings, *, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """`agentmarket serve` as deployed: logging at info (one canonical line per request, plus
    the catalog's view and search events), the lines discarded."""
    port = _free_port()
    env = {**os.environ, **_process_env(settings), "LOG_LEVEL": "info"}
    process = _spawn(["serve", "--port", str(port), "--workers", str(workers)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(f"{base}/readyz")  # 503 until the database is migrated
    except RuntimeError:
        process.terminate()
        raise
    return process, base


WRK_RUNS = 3


def _wrk_row(settings: Settings, concurrency: int, seconds: int, workers: int) -> Result:
    process, base = _start_server(settings, workers=workers)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench_wrk(base, concurrency, 2, Path(tmp))  # warm-up: connections, caches
            label = "1 worker" if workers == 1 else f"--workers {workers}"
            return bench_wrk(
                base,
                concurrency,
                seconds,
                Path(tmp),
                runs=WRK_RUNS,
                name=f"HTTP GET /api/marketplace/agents (wrk, {label}, median of {WRK_RUNS})",
            )
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_catalog(
    settings: Settings, *, concurrency: int, requests: int, seconds: int
) -> list[Result]:
    """The endpoint (wrk when installed: one server process, then two; an httpx client) and the
    same query via psycopg."""
    results: list[Result] = []
    if shutil.which("wrk"):
        results += [_wrk_row(settings, concurrency, seconds, workers) for workers in (1, 2)]
    process, base = _start_server(settings)
    try:
        results.append(asyncio.run(bench_http(base, concurrency, requests)))
    finally:
        process.terminate()
        process.wait(timeout=10)
    results.append(asyncio.run(bench_direct(settings.api_url, concurrency, requests)))
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
        "| what | concurrency | requests | p50 ms | p90 ms | p95 ms | p99 ms | req/s | errors |",
        "|---|---|---|---|---|---|---|---|---|",
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
                "p90_ms": round(r.p90_ms, 3),
                "p95_ms": round(r.p95_ms, 3),
                "p99_ms": round(r.p99_ms, 3),
                "throughput": round(r.throughput, 1),
                "errors": r.errors,
            }
            for r in results
        ],
        indent=2,
    )


# --- chat ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRun:
    concurrency: int
    messages: int
    seconds: float
    ttft_ms: list[float]
    completion_ms: list[float]
    errors: int


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def _stream_one(
    client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[float, float, str]:
    """(ms to the first delta, ms to message.completed, conversation id) as the client sees them."""
    started = time.perf_counter()
    first: float | None = None
    conversation = ""
    async with client.stream(
        "POST", path, json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("event: message.delta") and first is None:
                first = time.perf_counter()
            elif line.startswith("data: ") and not conversation and "conversation_id" in line:
                conversation = json.loads(line[6:])["message"]["conversation_id"]
            elif line.startswith("event: message.completed"):
                done = time.perf_counter()
                return ((first or done) - started) * 1000, (done - started) * 1000, conversation
            elif line.startswith("event: message.failed"):
                raise RuntimeError("reply failed")
    raise RuntimeError("stream ended early")


async def bench_chat_streams(
    api: str, token: str, deployment: str, concurrency: int, per_conversation: int
) -> ChatRun:
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    ttfts: list[float] = []
    completions: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=api, headers=headers, limits=limits, timeout=60
    ) as client:

        async def conversation(i: int) -> None:
            nonlocal errors
            conversation_id: str | None = None
            for turn in range(per_conversation + 1):  # the first turn warms up, uncounted
                body: dict[str, Any] = {"message": f"conversation {i} turn {turn}"}
                if conversation_id:
                    body["conversation_id"] = conversation_id
                try:
                    ttft, done, conversation_id = await _stream_one(
                        client, f"/api/agents/{deployment}/chat", body
                    )
                except (RuntimeError, httpx.HTTPError):
                    errors += 1
                    continue
                if turn > 0:
                    ttfts.append(ttft)
                    completions.append(done)

        started = time.perf_counter()
        await asyncio.gather(*(conversation(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    return ChatRun(concurrency, len(completions), seconds, ttfts, completions, errors)


async def bench_chat_throughput(
    api: str, token: str, deployment: str, messages: int, database_url: str
) -> float:
    """Messages/s: `messages` sent async (32 at a time) until the last reply is written,
    watched from the database so the measuring adds no load to the API."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(
        base_url=api, headers=headers, limits=limits, timeout=60
    ) as client:
        started = time.perf_counter()
        sem = asyncio.Semaphore(32)

        async def send(i: int) -> str:
            async with sem:
                r = await client.post(
                    f"/api/agents/{deployment}/chat",
                    json={"message": f"throughput {i}", "mode": "async"},
                )
                reply_id: str = r.json()["assistant_message"]["id"]
                return reply_id

        ids = await asyncio.gather(*(send(i) for i in range(messages)))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "select count(*) from public.agent_messages where id = any(%s)"
                " and status in ('completed', 'failed', 'cancelled')",
                (list(ids),),
            )
            row = await cur.fetchone()
            if row and row[0] >= messages:
                return messages / (time.perf_counter() - started)
            await asyncio.sleep(0.05)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentmarket", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# One bench user drives up to hundreds of conversations at once: the per-user limits are lifted for
# the run (and restored after it), so this measures the pipeline; `bench limits` measures them.
LIFTED_LIMITS = {
    "chat_per_minute": 100_000,
    "max_in_flight_per_user": 10_000,
    "platform_tokens_per_day": 0,
    "deploy_per_minute": 100_000,
}


@contextlib.contextmanager
def limits_lifted(settings: Settings) -> Iterator[None]:
    """The database's per-user limits and sql-sidekick's rate lifted, then put back."""
    from agentmarket.db.pool import connect
    from agentmarket.ops import migrate

    with connect(settings) as conn:
        row = conn.execute(
            "select chat_per_minute, max_in_flight_per_user, platform_tokens_per_day,"
            " deploy_per_minute, (select rate_limit_per_minute from public.marketplace_agents"
            " where slug = 'sql-sidekick') from private.app_settings"
        ).fetchone()
        assert row is not None
        before = dict(zip(LIFTED_LIMITS, row[:4], strict=True))
        migrate.store_settings(conn, **LIFTED_LIMITS)
        conn.execute(
            "update public.marketplace_agents set rate_limit_per_minute = 10000"
            " where slug = 'sql-sidekick'"
        )
    try:
        yield
    finally:
        with connect(settings) as conn:
            migrate.store_settings(conn, **before)
            conn.execute(
                "update public.marketplace_agents set rate_limit_per_minute = %s"
                " where slug = 'sql-sidekick'",
                (row[4],),
            )


def run_chat(
    settings: Settings, *, levels: list[int], per_conversation: int, ttft_ms: int, messages: int
) -> dict[str, Any]:
    with limits_lifted(settings):
        return _run_chat(
            settings,
            levels=levels,
            per_conversation=per_conversation,
            ttft_ms=ttft_ms,
            messages=messages,
        )


def _run_chat(
    settings: Settings, *, levels: list[int], per_conversation: int, ttft_ms: int, messages: int
) -> dict[str, Any]:
    """The chat pipeline against the offline model: client-seen TTFT and completion at each
    concurrency level with a fixed model TTFT, queue pickup, and throughput at zero latency."""
    from agentmarket.db.pool import connect
    from agentmarket.ops.tokens import ensure_user, mint_access_token

    assert settings.supabase_jwt_secret is not None
    results: dict[str, Any] = {"ttft_model_ms": ttft_ms, "levels": []}
    for label, model_ttft in (("latency", ttft_ms), ("throughput", 0)):
        model_port, api_port = _free_port(), _free_port()
        env = {
            **os.environ,
            **_process_env(settings),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
            "OPENAI_API_KEY": "sk-offline-bench-key-00000000000000000000",
            "LOG_LEVEL": "warning",
            "MAX_OPEN_STREAMS_PER_USER": "10000",
        }
        procs = [
            _spawn(["offline-model", "--port", str(model_port), "--ttft-ms", str(model_ttft)], env),
            _spawn(["serve", "--port", str(api_port)], env),
            _spawn(["worker", "--concurrency", str(max(levels) + 8)], env),
        ]
        api = f"http://127.0.0.1:{api_port}"
        try:
            _wait_up(f"http://127.0.0.1:{model_port}/_offline/health")
            _wait_up(f"{api}/readyz")
            with connect(settings) as conn:
                user = ensure_user(conn, email=f"bench-{label}-{os.getpid()}@example.com")
            token = mint_access_token(
                user, secret=settings.supabase_jwt_secret.get_secret_value(), ttl_seconds=3600
            )
            deployment = httpx.post(
                f"{api}/api/marketplace/deploy",
                json={"agent_id": "sql-sidekick", "config": {}},
                headers={"Authorization": f"Bearer {token}"},
            ).json()["id"]
            if label == "latency":
                for level in levels:
                    run = asyncio.run(
                        bench_chat_streams(api, token, deployment, level, per_conversation)
                    )
                    results["levels"].append(run)
                with connect(settings) as conn:
                    row = conn.execute(
                        "select percentile_cont(array[0.5, 0.95]) within group"
                        " (order by extract(epoch from j.started_at - j.created_at))"
                        " from private.chat_jobs j join public.agent_messages m"
                        " on m.id = j.message_id where m.user_id = %s and j.attempts = 1",
                        (user.id,),
                    ).fetchone()
                results["pickup_ms"] = [v * 1000 for v in row[0]] if row and row[0] else None
            else:
                results["throughput"] = asyncio.run(
                    bench_chat_throughput(
                        api, token, deployment, messages, settings.database_url.get_secret_value()
                    )
                )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
    return results


def chat_report(command: str, results: dict[str, Any]) -> str:
    model = results["ttft_model_ms"]
    lines = [
        "## Chat pipeline: POST /api/agents/{id}/chat (streaming)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Real processes: functions "
        "(uvicorn, one worker), chat worker, offline model, PostgreSQL, and the Python load "
        "client, all on the same two cores.",
        "",
        "```",
        command,
        "```",
        "",
        f"The offline model waits {model} ms before its first token and then streams as fast as it "
        "can, so the model's own TTFT and completion are both ≈ "
        f"{model} ms; overhead = client-seen time - {model} ms. One user drives every "
        "conversation, so the per-user limits are lifted for the run (their cost is in "
        '"Limits: what they add to a chat send").',
        "",
        "| concurrent conversations | replies | TTFT p50 | TTFT p95 | done p50 | done p95 "
        "| overhead TTFT p50 / p95 | overhead done p50 / p95 | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["levels"]:
        t50, t95 = _pct(run.ttft_ms, 50), _pct(run.ttft_ms, 95)
        d50, d95 = _pct(run.completion_ms, 50), _pct(run.completion_ms, 95)
        lines.append(
            f"| {run.concurrency} | {run.messages} | {t50:.0f} ms | {t95:.0f} ms | {d50:.0f} ms "
            f"| {d95:.0f} ms | {t50 - model:.0f} / {t95 - model:.0f} ms "
            f"| {d50 - model:.0f} / {d95 - model:.0f} ms | {run.errors} |"
        )
    pickup = results.get("pickup_ms")
    lines += [
        "",
        f"Queue pickup (enqueue → claimed, first attempts): p50 {pickup[0]:.1f} ms, "
        f"p95 {pickup[1]:.1f} ms."
        if pickup
        else "Queue pickup: not measured.",
        "",
        f"Sustained throughput with a zero-latency model: {results['throughput']:.0f} messages/s "
        "(async sends, 32 client connections, until the last reply is written; one functions "
        "process, one worker process).",
        "",
    ]
    return "\n".join(lines)
