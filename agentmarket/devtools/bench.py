"""`agentmarket bench`: measured, never asserted. Results go to docs/benchmarks.md with the command.

catalog: GET /api/marketplace/agents through the real server process (uvicorn, one worker, and
`--workers 2`) at N concurrent clients, next to the same query run directly with psycopg as anon
(the floor the HTTP layer adds to).

chat: our pipeline against two benchmark references (a naive proxy and a raw proxy,
agentmarket/devtools/naive_proxy.py), throughput, CPU by process, statements, CPU per streamed
token and time-to-first-token overhead; see the "chat" section below.
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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from agentmarket.core import paths
from agentmarket.core.config import Settings

__all__ = [
    "TARGETS",
    "BenchCaller",
    "ChatPlan",
    "ChatRun",
    "Phase",
    "Result",
    "as_json",
    "bench_chat_streams",
    "bench_direct",
    "bench_http",
    "bench_wrk",
    "chat_json",
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
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
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
#
# `bench chat` measures our pipeline (functions API + queue + chat worker) and, in the same run on
# the same offline model, two BENCHMARK REFERENCES that are not product paths: the "naive proxy"
# and the "raw proxy" of agentmarket/devtools/naive_proxy.py (one FastAPI process calling the model
# inside the request, with the openai SDK or with httpx + json). Each target runs alone, as its own
# processes, through the same phases:
#
# - throughput: N streamed messages over C connections (C conversations, N/C turns each) with a
#   zero-latency model; msg/s, CPU ms per message by process (/proc, Postgres backends found by
#   application_name), Postgres statements per message (pg_stat_statements, reset first);
# - long replies: paced by the model (`[[long:N]] [[tps:T]]`), CPU µs per streamed token;
# - latency: at each level of concurrent conversations, client-seen time to first token and to
#   completion with the model's own TTFT set (`[[ttft:MS]]`), overhead = that minus the model's.

TARGETS = {"ours": "ours", "sdk": "naive proxy", "raw": "raw proxy"}
# CPU groups: the server's processes and their Postgres backends make the "server" total; the
# offline model and the load client are shown apart.
PROXY_COMMAND = (sys.executable, "-m", "agentmarket.devtools.naive_proxy")
SERVER_GROUPS = ("api", "worker", "api_db", "worker_db")
OTHER_GROUPS = ("model", "client")


@dataclass(frozen=True)
class ChatPlan:
    """What one `bench chat` run does (the CLI's options)."""

    messages: int = 1000
    connections: int = 32
    levels: tuple[int, ...] = (10, 50)
    turns: int = 20  # 200 samples at 10 conversations: a p95 of 50 is its 3rd-worst value
    ttft_ms: int = 200
    long_tokens: int = 300
    long_tps: float = 100.0
    long_conversations: int = 10
    long_turns: int = 2
    targets: tuple[str, ...] = tuple(TARGETS)  # which of TARGETS run, in TARGETS' order
    # Users the conversations are shared out among, each with their own deployment; 0: one per
    # conversation of the largest phase (as many people chatting at once, the realistic load).
    users: int = 0

    def user_count(self) -> int:
        return self.users or max(self.connections, self.long_conversations, *self.levels)


@dataclass(frozen=True)
class ChatRun:
    concurrency: int
    messages: int
    seconds: float
    ttft_ms: list[float]
    completion_ms: list[float]
    errors: int


@dataclass(frozen=True)
class Phase:
    """One measured phase: the client's view, CPU seconds by group, statements, and the
    completion tokens of the replies created in it."""

    run: ChatRun
    cpu: dict[str, float]
    statements: int | None
    tokens: int


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def _stream_one(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], token: str
) -> tuple[float, float, str]:
    """(ms to the first delta, ms to message.completed, conversation id) as the client sees them."""
    started = time.perf_counter()
    first: float | None = None
    conversation = ""
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
    async with client.stream("POST", path, json=body, headers=headers) as response:
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


def _plain(i: int, turn: int) -> str:
    return f"conversation {i} turn {turn}"


@dataclass
class BenchCaller:
    """One bench user: their access token and their deployment (made through our API)."""

    user_id: str
    token: str
    deployment: str = ""


async def bench_chat_streams(
    api: str,
    callers: Sequence[BenchCaller],
    concurrency: int,
    per_conversation: int,
    *,
    text: Callable[[int, int], str] = _plain,
    on_start: Callable[[], None] | None = None,
    total: int | None = None,
) -> ChatRun:
    """`concurrency` conversations, conversation i by `callers[i % len(callers)]`, each a short
    first turn (warm-up, uncounted) and then `per_conversation` streamed turns (or `total` turns
    shared out as evenly as they go); the clock (and `on_start`) starts once every conversation
    has had its first turn."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    ttfts: list[float] = []
    completions: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=api, limits=limits, timeout=120) as client:

        async def turn(i: int, n: int, conversation_id: str | None) -> str | None:
            nonlocal errors
            caller = callers[i % len(callers)]
            body: dict[str, Any] = {"message": text(i, n) if n else _plain(i, n)}
            if conversation_id:
                body["conversation_id"] = conversation_id
            try:
                ttft, done, conversation_id = await _stream_one(
                    client, f"/api/agents/{caller.deployment}/chat", body, caller.token
                )
            except (RuntimeError, httpx.HTTPError):
                errors += 1
                return conversation_id
            if n > 0:
                ttfts.append(ttft)
                completions.append(done)
            return conversation_id

        conversations = await asyncio.gather(*(turn(i, 0, None) for i in range(concurrency)))
        if on_start is not None:
            on_start()

        def turns(i: int) -> int:
            if total is None:
                return per_conversation
            return total // concurrency + (1 if i < total % concurrency else 0)

        async def rest(i: int) -> None:
            conversation_id = conversations[i]
            for n in range(1, turns(i) + 1):
                conversation_id = await turn(i, n, conversation_id)

        started = time.perf_counter()
        await asyncio.gather(*(rest(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    return ChatRun(concurrency, len(completions), seconds, ttfts, completions, errors)


async def model_alone(model_url: str, concurrency: int, turns: int, ttft_ms: int) -> ChatRun:
    """The model's own TTFT and completion as the load client sees them with nothing in between:
    `concurrency` clients streaming `turns` replies each straight from the offline model."""
    headers = {"Authorization": "Bearer sk-offline-bench-key-00000000000000000000"}
    limits = httpx.Limits(max_connections=concurrency + 4)
    ttfts: list[float] = []
    completions: list[float] = []
    errors = 0
    async with httpx.AsyncClient(
        base_url=model_url, headers=headers, limits=limits, timeout=120
    ) as client:

        async def one(i: int, n: int) -> None:
            nonlocal errors
            body = {
                "model": "gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": f"{_plain(i, n)} [[ttft:{ttft_ms}]]"}],
            }
            started = time.perf_counter()
            first: float | None = None
            async with client.stream("POST", "/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if first is None and '"content":"' in line and '"content":""' not in line:
                        first = time.perf_counter()
                    elif line == "data: [DONE]":
                        done = time.perf_counter()
                        ttfts.append(((first or done) - started) * 1000)
                        completions.append((done - started) * 1000)
                        return
            errors += 1

        async def conversation(i: int) -> None:
            for n in range(1, turns + 1):
                await one(i, n)

        started = time.perf_counter()
        await asyncio.gather(*(conversation(i) for i in range(concurrency)))
        seconds = time.perf_counter() - started
    return ChatRun(concurrency, len(completions), seconds, ttfts, completions, errors)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentmarket", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_up(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# A bench user may drive many conversations at once (`--users`): the per-user limits are lifted for
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


def run_chat(settings: Settings, plan: ChatPlan) -> dict[str, Any]:
    """Ours, the naive proxy and the raw proxy through the same phases (see above); the result
    is JSON-ready (`chat_report` renders it)."""
    with limits_lifted(settings):
        return _run_chat(settings, plan)


@dataclass
class _Bench:
    """What every target of one run shares."""

    settings: Settings
    plan: ChatPlan
    env: dict[str, str]
    model: subprocess.Popen[bytes]
    callers: list[BenchCaller]


def _start_target(
    key: str, bench: _Bench
) -> tuple[str, dict[str, list[subprocess.Popen[bytes]]], dict[str, list[str]]]:
    """Start a target's processes: (base URL, processes by CPU group, backends by CPU group)."""
    from agentmarket.devtools.naive_proxy import APPLICATION_NAMES

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    if key == "ours":
        api = _spawn(["serve", "--port", str(port)], bench.env)
        worker = _spawn(["worker", "--concurrency", str(max(bench.plan.levels) + 8)], bench.env)
        processes = {"api": [api], "worker": [worker]}
        backends = {
            "api_db": ["agentmarket-api", "agentmarket-api-listen"],
            "worker_db": ["agentmarket-worker", "agentmarket-worker-listen"],
        }
    else:
        proxy = subprocess.Popen(
            [*PROXY_COMMAND, "--port", str(port), "--mode", key],
            env=bench.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes = {"api": [proxy]}
        backends = {"api_db": [APPLICATION_NAMES[key]]}
    try:
        _wait_up(f"{base}/readyz", processes["api"][0])
    except RuntimeError:
        _stop([p for ps in processes.values() for p in ps])
        raise
    return base, processes, backends


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _measured(
    bench: _Bench,
    meter: Any,
    statements: Any,
    drive: Callable[[Callable[[], None]], ChatRun],
) -> Phase:
    """Run `drive` with an on_start hook that resets the counters, then read them."""
    from agentmarket.db.pool import connect

    since: list[Any] = []

    def on_start() -> None:
        statements.reset()
        with connect(bench.settings) as conn:
            row = conn.execute("select now()").fetchone()
            assert row is not None
            since.append(row[0])
        meter.start()

    run = drive(on_start)
    cpu = meter.stop()
    count = statements.count()
    with connect(bench.settings) as conn:
        row = conn.execute(
            "select coalesce(sum(completion_tokens), 0)::bigint from public.agent_messages"
            " where user_id = any(%s::uuid[]) and role = 'assistant' and created_at >= %s",
            ([c.user_id for c in bench.callers], since[0]),
        ).fetchone()
    return Phase(run, cpu, count, int(row[0]) if row else 0)


def _run_target(key: str, bench: _Bench) -> dict[str, Any]:
    from agentmarket.devtools.proc_cpu import CpuMeter, Statements

    plan = bench.plan
    load_before = os.getloadavg()[0]
    base, processes, backends = _start_target(key, bench)
    try:
        for caller in bench.callers:
            if not caller.deployment:  # made through our API, then used by every target
                response = httpx.post(
                    f"{base}/api/marketplace/deploy",
                    json={"agent_id": "sql-sidekick", "config": {}},
                    headers={"Authorization": f"Bearer {caller.token}"},
                    timeout=30,
                )
                response.raise_for_status()
                caller.deployment = response.json()["id"]
        meter = CpuMeter(
            processes={
                **{g: [p.pid for p in ps] for g, ps in processes.items()},
                "model": [bench.model.pid],
                "client": [os.getpid()],
            },
            backends=backends,
            db_url=bench.settings.direct_database_url,
            without_children=("client",),
        )
        statements = Statements(bench.settings.direct_database_url)

        def streams(
            conversations: int,
            turns: int,
            text: Callable[[int, int], str],
            total: int | None = None,
        ) -> Phase:
            def drive(on_start: Callable[[], None]) -> ChatRun:
                return asyncio.run(
                    bench_chat_streams(
                        base, bench.callers, conversations, turns,
                        text=text, on_start=on_start, total=total,
                    )
                )  # fmt: skip

            return _measured(bench, meter, statements, drive)

        throughput = streams(plan.connections, 0, _plain, total=plan.messages)
        long_marker = f"[[long:{plan.long_tokens}]] [[tps:{plan.long_tps:g}]]"
        long = streams(
            plan.long_conversations,
            plan.long_turns,
            lambda i, n: f"{_plain(i, n)} {long_marker}",
        )
        latency = []
        for level in plan.levels:
            phase = streams(
                level, plan.turns, lambda i, n: f"{_plain(i, n)} [[ttft:{plan.ttft_ms}]]"
            )
            latency.append(_latency_row(phase.run, plan.ttft_ms))
        result = {
            "name": TARGETS[key],
            "throughput": _throughput_row(throughput),
            "long": _long_row(long),
            "latency": latency,
            "errors": throughput.run.errors
            + long.run.errors
            + sum(row["errors"] for row in latency),
            "backends_readable": meter.backends_readable,
            "processes_measured": meter.found(),
            "load_average": [load_before, os.getloadavg()[0]],
        }
        if statements.unavailable:
            result["statements_note"] = statements.unavailable
        return result
    finally:
        _stop([p for ps in processes.values() for p in ps])


def _server(cpu: dict[str, float]) -> float:
    return sum(cpu.get(g, 0.0) for g in SERVER_GROUPS)


def _throughput_row(phase: Phase) -> dict[str, Any]:
    n = max(1, phase.run.messages)
    per_message = {g: v * 1000 / n for g, v in phase.cpu.items()}
    per_message["server"] = _server(phase.cpu) * 1000 / n
    return {
        "messages": phase.run.messages,
        "connections": phase.run.concurrency,
        "seconds": round(phase.run.seconds, 3),
        "msg_per_s": phase.run.messages / phase.run.seconds if phase.run.seconds else 0.0,
        "cpu_ms_per_message": per_message,
        "statements_per_message": phase.statements / n if phase.statements is not None else None,
        "errors": phase.run.errors,
    }


def _long_row(phase: Phase) -> dict[str, Any]:
    tokens = max(1, phase.tokens)
    per_token = {g: v * 1e6 / tokens for g, v in phase.cpu.items()}
    per_token["server"] = _server(phase.cpu) * 1e6 / tokens
    return {
        "replies": phase.run.messages,
        "tokens": phase.tokens,
        "cpu_us_per_token": per_token,
        "errors": phase.run.errors,
    }


def _latency_row(run: ChatRun, model_ms: int) -> dict[str, Any]:
    t50, t95 = _pct(run.ttft_ms, 50), _pct(run.ttft_ms, 95)
    d50, d95 = _pct(run.completion_ms, 50), _pct(run.completion_ms, 95)
    return {
        "concurrency": run.concurrency,
        "replies": run.messages,
        "ttft_ms": [t50, t95],
        "completion_ms": [d50, d95],
        "ttft_overhead_ms": [t50 - model_ms, t95 - model_ms],
        "completion_overhead_ms": [d50 - model_ms, d95 - model_ms],
        "errors": run.errors,
    }


def _run_chat(settings: Settings, plan: ChatPlan) -> dict[str, Any]:
    from agentmarket.db.pool import connect
    from agentmarket.ops.tokens import ensure_user, mint_access_token

    assert settings.supabase_jwt_secret is not None
    model_port = _free_port()
    env = {
        **os.environ,
        **_process_env(settings),
        "OPENAI_BASE_URL": f"http://127.0.0.1:{model_port}/v1",
        "OPENAI_API_KEY": "sk-offline-bench-key-00000000000000000000",
        "LOG_LEVEL": "warning",
        "MAX_OPEN_STREAMS_PER_USER": "10000",
    }
    # One model for every target: zero latency, unpaced; the phases pace it with markers.
    model = _spawn(["offline-model", "--port", str(model_port), "--ttft-ms", "0"], env)
    try:
        _wait_up(f"http://127.0.0.1:{model_port}/_offline/health", model)
        secret = settings.supabase_jwt_secret.get_secret_value()
        with connect(settings) as conn:
            users = [
                ensure_user(conn, email=f"bench-chat-{os.getpid()}-{n}@example.com")
                for n in range(plan.user_count())
            ]
        callers = [
            BenchCaller(str(u.id), mint_access_token(u, secret=secret, ttl_seconds=3 * 3600))
            for u in users
        ]
        bench = _Bench(settings, plan, env, model, callers)
        targets = {key: _run_target(key, bench) for key in TARGETS if key in plan.targets}
        alone = [
            _latency_row(
                asyncio.run(
                    model_alone(
                        f"http://127.0.0.1:{model_port}/v1", level, plan.turns, plan.ttft_ms
                    )
                ),
                plan.ttft_ms,
            )
            for level in plan.levels
        ]
    finally:
        _stop([model])
    return {
        "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "plan": {**plan.__dict__, "levels": list(plan.levels), "targets": list(plan.targets)},
        "users": len(callers),
        "targets": targets,
        "model_alone": alone,
    }


def chat_json(results: dict[str, Any]) -> str:
    def clean(value: Any) -> Any:
        if isinstance(value, float):
            return None if value != value else round(value, 3)  # NaN -> null
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(results), indent=2)


NONE = "n/a"  # a row that does not apply to a target, or a value not measured


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None or value != value:
        return NONE
    return f"{value:.{digits}f}{unit}"


def _chat_rows(results: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(metric, one cell per target in TARGETS order)."""
    plan = results["plan"]
    targets = [results["targets"][k] for k in TARGETS if k in results["targets"]]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> tuple[str, list[str]]:
        return label, [cell(t) for t in targets]

    def cpu(group: str, proxies: bool = True) -> Callable[[dict[str, Any]], str]:
        def cell(t: dict[str, Any]) -> str:
            if not proxies and t["name"] != TARGETS["ours"]:
                return NONE
            return _fmt(t["throughput"]["cpu_ms_per_message"].get(group), " ms", 2)

        return cell

    def stmts(t: dict[str, Any]) -> str:
        value = t["throughput"]["statements_per_message"]
        return _fmt(value) if value is not None else "not counted (pg_stat_statements not loaded)"

    def worker_token(t: dict[str, Any]) -> str:
        group = "worker" if t["name"] == TARGETS["ours"] else "api"
        return _fmt(t["long"]["cpu_us_per_token"].get(group), " µs", 0)

    def overhead(i: int, key: str) -> Callable[[dict[str, Any]], str]:
        def cell(t: dict[str, Any]) -> str:
            return " / ".join(_fmt(v, digits=0) for v in t["latency"][i][key]) + " ms"

        return cell

    rows = [
        row(
            f"throughput: {plan['messages']} streamed messages, {plan['connections']} "
            "connections, zero-latency model",
            lambda t: _fmt(t["throughput"]["msg_per_s"], " msg/s"),
        ),
        row("CPU per message, server (processes + their Postgres backends)", cpu("server")),
        row("  API process (references: the proxy process)", cpu("api")),
        row("  worker process", cpu("worker", proxies=False)),
        row("  Postgres backends of the API (references: of the proxy)", cpu("api_db")),
        row("  Postgres backends of the worker", cpu("worker_db", proxies=False)),
        row("  offline model (not in the server figure)", cpu("model")),
        row("  load client (not in the server figure)", cpu("client")),
        row("Postgres statements per message", stmts),
        row(
            f"long replies ({plan['long_tokens']} tokens at {plan['long_tps']:g} tokens/s): "
            "server CPU per streamed token",
            lambda t: _fmt(t["long"]["cpu_us_per_token"]["server"], " µs", 0),
        ),
        row("  worker (references: the proxy process) per streamed token", worker_token),
    ]
    for i, level in enumerate(plan["levels"]):
        for key, what in (("ttft_overhead_ms", "TTFT"), ("completion_overhead_ms", "completion")):
            rows.append(
                row(
                    f"{what} overhead p50 / p95, {level} concurrent conversations",
                    overhead(i, key),
                )
            )
    rows.append(row("errors (all phases)", lambda t: str(t["errors"])))
    rows.append(
        row(
            "machine load (1-minute load average) before / after the target's phases",
            lambda t: " / ".join(_fmt(v, digits=1) for v in t.get("load_average", [None, None])),
        )
    )
    return rows


def chat_report(command: str, results: dict[str, Any]) -> str:
    plan = results["plan"]
    names = [TARGETS[k] for k in TARGETS if k in results["targets"]]
    lines = [
        "## Chat pipeline against a naive proxy: POST /api/agents/{id}/chat (streaming)",
        "",
        f"Measured {results['measured_at']} on {results['machine']}. Real processes: ours is "
        "functions (uvicorn, one process) + chat worker (one process); the references are one "
        "uvicorn process each (agentmarket/devtools/naive_proxy.py, a benchmark reference, not "
        "a product path); the offline model, PostgreSQL and the Python load client share the "
        f"same cores. Each target runs alone, in turn. The conversations are shared among "
        f"{results.get('users', 1)} users, each with their own deployment of one agent.",
        "",
        "```",
        command,
        "```",
        "",
        f"| metric | {' | '.join(names)} |",
        "|---|" + "---|" * len(names),
        *(f"| {label} | {' | '.join(cells)} |" for label, cells in _chat_rows(results)),
        "",
        f"Overheads are client-seen times minus the model's own: it waits {plan['ttft_ms']} ms "
        "before its first token and then streams unpaced, so its TTFT and its completion are "
        f"both ≈ {plan['ttft_ms']} ms; each level runs {plan['turns']} measured turns per "
        "conversation after one warm-up turn.",
        "",
    ]
    alone = results.get("model_alone") or []
    if alone:
        seen = "; ".join(
            f"{row['concurrency']} at once: TTFT p50 / p95 "
            + " / ".join(_fmt(v, digits=0) for v in row["ttft_ms"])
            + " ms, completion "
            + " / ".join(_fmt(v, digits=0) for v in row["completion_ms"])
            + " ms"
            for row in alone
        )
        lines += [
            "The model alone (the load client streaming from it directly, same concurrency "
            f"and turns, nothing in between): {seen}. The difference from {plan['ttft_ms']} ms "
            "is the load client's and the model's own share of every overhead above.",
            "",
        ]
    for target in results["targets"].values():
        if "statements_note" in target:
            lines += [f"{target['name']}: {target['statements_note']}", ""]
        if not target.get("backends_readable", True):
            lines += [
                f"{target['name']}: some Postgres backends' /proc entries were unreadable "
                "(is the database on another machine?): their CPU is missing.",
                "",
            ]
    return "\n".join(lines)
