"""`agentmarket bench soak`: the pipeline under faults for minutes, then checked for leftovers.

Our real processes (`serve`, `worker`) against the offline model with a global fault mix
(`--fault-rate` of the model calls get one of 429, 500, 503, a hang, a cut stream: see
agentmarket/devtools/offline_model.py), while the worker is killed with SIGKILL every
`--kill-every` seconds and started again at once (its leased jobs wait out their lease, then
another claim takes them over). `conversations` clients stream turns (a new conversation every
`turns_per_conversation` turns) until the time is up, following every reply to its end the way a
client should (a `message.reset` discards the text so far; a stream that ends early is resumed
with `Last-Event-ID`).

At the end, once every client turn has ended, the run checks the database for the bench user:
nothing left `queued`/`running` (after waiting up to `drain_seconds`), at most one reply per user
message, no completed reply whose text holds the echo twice, and every client's assembled text
equal to the stored reply. `SoakReport.ok` is false (the command exits 1) when any check fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from agentmarket.core.config import Settings
from agentmarket.devtools.bench import (
    _free_port,
    _pct,
    _process_env,
    _spawn,
    _stop,
    _wait_up,
    limits_lifted,
)

__all__ = ["TITLE", "SoakPlan", "SoakReport", "run_soak", "soak_json", "soak_report"]

TITLE = "Soak: faults, worker kills, nothing stuck or duplicated"

MODEL_KEY = "sk-offline-soak-key-000000000000000000000"
FAULT_MIX = "429,500,503,timeout,cut"


@dataclass(frozen=True)
class SoakPlan:
    """What one soak run does (the CLI's options)."""

    seconds: float = 300.0
    fault_rate: float = 0.3
    fault_kinds: str = FAULT_MIX
    kill_every: float = 60.0  # SIGKILL the worker (and start a new one) this often; 0 = never
    conversations: int = 8  # clients streaming at once
    turns_per_conversation: int = 4  # then the client starts a new conversation
    hang_seconds: float = 3.0  # how long a `timeout` fault hangs (the model call times out first)
    model_timeout_seconds: float = 2.0  # the worker's OPENAI_TIMEOUT_SECONDS
    lease_seconds: int = 5  # a killed worker's jobs are taken over after this
    drain_seconds: float = 90.0  # after the load, how long replies may take to end
    seed: int = 0


@dataclass
class _Tally:
    completed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)  # replies failed, by error code
    client_errors: Counter[str] = field(default_factory=Counter)  # sends/streams that broke
    resets: int = 0
    resumes: int = 0
    mismatched: list[str] = field(default_factory=list)  # reply ids: client text != stored


@dataclass(frozen=True)
class SoakReport:
    measured_at: str
    machine: str
    plan: dict[str, Any]
    seconds: float  # the load's length (turns started before the end may finish after it)
    turns: int  # replies the clients followed to an end (completed or failed)
    completed: int
    failed: dict[str, int]
    client_errors: dict[str, int]
    p50_ms: float
    p95_ms: float
    max_ms: float
    resets: int
    resumes: int
    kills: int
    model_requests: dict[str, int]  # model calls by the offline model's outcome
    stored: dict[str, int]  # the bench user's replies by stored status
    stuck: int
    duplicated: int
    mismatched: int
    notes: list[str]

    @property
    def ok(self) -> bool:
        return self.stuck == 0 and self.duplicated == 0 and self.mismatched == 0 and self.turns > 0


class _Stream:
    """One reply as a client follows it: the text (reset on `message.reset`), the last event id,
    and its end."""

    def __init__(self) -> None:
        self.text = ""
        self.last_id: str | None = None
        self.final: dict[str, Any] | None = None
        self.final_event: str | None = None
        self.message_id: str | None = None
        self.conversation_id: str | None = None
        self.resets = 0

    def event(self, name: str, data: str, event_id: str | None) -> None:
        if event_id:
            self.last_id = event_id
        payload = json.loads(data) if data else {}
        if name == "message.created":
            message = payload["message"]
            self.conversation_id = message["conversation_id"]
            if message["role"] == "assistant":
                self.message_id = message["id"]
        elif name == "message.delta":
            self.text += payload["delta"]
        elif name == "message.reset":
            self.text = ""
            self.resets += 1
        elif name in ("message.completed", "message.failed", "message.deleted"):
            self.final_event = name
            self.final = payload.get("message")

    async def consume(self, response: httpx.Response) -> None:
        name, data, event_id = "", "", None
        async for line in response.aiter_lines():
            if line == "":
                if name:
                    self.event(name, data, event_id)
                    if self.final_event:
                        return
                name, data, event_id = "", "", None
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line.startswith("id: "):
                event_id = line[4:]


class _Load:
    def __init__(self, api: str, token: str, deployment: str, plan: SoakPlan) -> None:
        self.api = api
        self.deployment = deployment
        self.plan = plan
        self.tally = _Tally()
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}

    async def turn(
        self, client: httpx.AsyncClient, text: str, conversation: str | None
    ) -> str | None:
        """Send one message and follow its reply to the end; the conversation id."""
        body: dict[str, Any] = {"message": text, "client_message_id": uuid.uuid4().hex}
        if conversation:
            body["conversation_id"] = conversation
        stream = _Stream()
        started = time.perf_counter()
        path = f"/api/agents/{self.deployment}/chat"
        try:
            async with client.stream("POST", path, json=body, headers=self.headers) as response:
                if response.status_code != 200:
                    self.tally.client_errors[f"http_{response.status_code}"] += 1
                    return conversation
                await stream.consume(response)
            # A stream that ended without a final event: resume from the last event seen.
            for _ in range(5):
                if stream.final_event or stream.message_id is None:
                    break
                self.tally.resumes += 1
                resume = {**self.headers, "Last-Event-ID": stream.last_id or "0.0"}
                url = f"/api/messages/{stream.message_id}/stream"
                async with client.stream("GET", url, headers=resume) as response:
                    if response.status_code != 200:
                        self.tally.client_errors[f"resume_http_{response.status_code}"] += 1
                        break
                    await stream.consume(response)
        except httpx.TimeoutException:
            self.tally.client_errors["client_timeout"] += 1
            return stream.conversation_id or conversation
        except httpx.HTTPError as exc:
            self.tally.client_errors[type(exc).__name__] += 1
            return stream.conversation_id or conversation
        self.tally.resets += stream.resets
        if stream.final_event is None or stream.final is None:
            self.tally.client_errors["stream_incomplete"] += 1
        elif stream.final_event == "message.completed":
            self.tally.completed += 1
            self.tally.latencies_ms.append((time.perf_counter() - started) * 1000)
            if stream.text != stream.final["content"]:
                self.tally.mismatched.append(str(stream.message_id))
        elif stream.final_event == "message.failed":
            error = stream.final.get("error") or {}
            self.tally.failed[str(error.get("code", "unknown"))] += 1
        else:
            self.tally.client_errors["deleted"] += 1
        return stream.conversation_id or conversation

    async def client(self, http: httpx.AsyncClient, index: int, deadline: float) -> None:
        conversation: str | None = None
        n = 0
        while time.monotonic() < deadline:
            if n % self.plan.turns_per_conversation == 0:
                conversation = None
            n += 1
            text = f"soak client {index} turn {n} {uuid.uuid4().hex[:8]}"
            conversation = await self.turn(http, text, conversation)


class _Workers:
    """The worker process, killed with SIGKILL and started again every `kill_every` seconds."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.process = _spawn(args, env)
        self.kills = 0

    def kill_and_restart(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self.process = _spawn(self.args, self.env)

    async def killing(self, every: float, seconds: float) -> None:
        """Kill at `every`, 2·`every`, … while the load runs: floor(seconds / every) kills,
        none while the last turns finish after it."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(1, int(seconds / every + 1e-9) + 1):
            await asyncio.sleep(max(0.0, start + k * every - loop.time()))
            self.kill_and_restart()


async def _drive(load: _Load, workers: _Workers, plan: SoakPlan) -> float:
    deadline = time.monotonic() + plan.seconds
    limits = httpx.Limits(max_connections=plan.conversations * 2 + 4)
    # Reads wait for pings (every 15 s) at worst; a reply should end well within a minute.
    timeout = httpx.Timeout(10.0, read=60.0)
    killer = (
        asyncio.create_task(workers.killing(plan.kill_every, plan.seconds))
        if plan.kill_every > 0
        else None
    )
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=load.api, limits=limits, timeout=timeout) as http:
            await asyncio.gather(
                *(load.client(http, i, deadline) for i in range(plan.conversations))
            )
    finally:
        if killer is not None:
            killer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await killer
    return time.monotonic() - started


def _checks(settings: Settings, user_id: str, drain_seconds: float) -> dict[str, Any]:
    """The database's view once the load is over: stuck, duplicated and stored replies."""
    from agentmarket.db.pool import connect

    deadline = time.monotonic() + drain_seconds
    with connect(settings) as conn:
        while True:
            row = conn.execute(
                "select count(*) from public.agent_messages m"
                " left join private.chat_jobs j on j.message_id = m.id"
                " where m.user_id = %s and m.role = 'assistant'"
                " and (m.status in ('queued', 'running') or j.status in ('queued', 'running'))",
                (user_id,),
            ).fetchone()
            stuck = int(row[0]) if row else 0
            if stuck == 0 or time.monotonic() >= deadline:
                break
            time.sleep(1)
        row = conn.execute(
            "select count(*) from (select reply_to from public.agent_messages"
            " where user_id = %s and role = 'assistant' group by reply_to having count(*) > 1) d",
            (user_id,),
        ).fetchone()
        duplicated = int(row[0]) if row else 0
        row = conn.execute(
            "select count(*) from public.agent_messages where user_id = %s"
            " and role = 'assistant' and status = 'completed'"
            " and (content not like 'Echo: %%' or content like '%%Echo: %%Echo: %%')",
            (user_id,),
        ).fetchone()
        doubled = int(row[0]) if row else 0
        stored: dict[str, int] = dict(
            conn.execute(
                "select coalesce(status || ':' || error_code, status), count(*)::int"
                " from public.agent_messages where user_id = %s and role = 'assistant'"
                " group by 1 order by 1",
                (user_id,),
            ).fetchall()
        )
    return {"stuck": stuck, "duplicated": duplicated + doubled, "stored": stored}


def run_soak(settings: Settings, plan: SoakPlan) -> SoakReport:
    """Start the offline model, the API and a worker, run the load with the worker killed on
    schedule, then check (see the module's docstring)."""
    with limits_lifted(settings):
        return _run_soak(settings, plan)


def _run_soak(settings: Settings, plan: SoakPlan) -> SoakReport:
    from agentmarket.db.pool import connect
    from agentmarket.ops.tokens import ensure_user, mint_access_token

    assert settings.supabase_jwt_secret is not None
    model_port, api_port = _free_port(), _free_port()
    model_url = f"http://127.0.0.1:{model_port}"
    api = f"http://127.0.0.1:{api_port}"
    env = {
        **os.environ,
        **_process_env(settings),
        "OPENAI_BASE_URL": f"{model_url}/v1",
        "OPENAI_API_KEY": MODEL_KEY,
        "OPENAI_TIMEOUT_SECONDS": f"{plan.model_timeout_seconds:g}",
        "LOG_LEVEL": "warning",
        "MAX_OPEN_STREAMS_PER_USER": "10000",
    }
    model_args = [
        *("offline-model", "--port", str(model_port), "--ttft-ms", "50"),
        *("--tokens-per-second", "200", "--fault-rate", f"{plan.fault_rate:g}"),
        *("--fault-kind", plan.fault_kinds, "--hang-seconds", f"{plan.hang_seconds:g}"),
        *("--seed", str(plan.seed)),
    ]
    worker_args = [
        *("worker", "--concurrency", str(plan.conversations + 4)),
        *("--lease-seconds", str(plan.lease_seconds), "--grace-seconds", "5"),
    ]
    processes: list[subprocess.Popen[bytes]] = []
    workers: _Workers | None = None
    try:
        model = _spawn(model_args, env)
        processes.append(model)
        _wait_up(f"{model_url}/_offline/health", model)
        server = _spawn(["serve", "--port", str(api_port)], env)
        processes.append(server)
        _wait_up(f"{api}/readyz", server)
        workers = _Workers(worker_args, env)
        with connect(settings) as conn:
            user = ensure_user(conn, email=f"bench-soak-{os.getpid()}@example.com")
        token = mint_access_token(
            user, secret=settings.supabase_jwt_secret.get_secret_value(), ttl_seconds=3 * 3600
        )
        response = httpx.post(
            f"{api}/api/marketplace/deploy",
            json={"agent_id": "sql-sidekick", "config": {}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        response.raise_for_status()
        load = _Load(api, token, response.json()["id"], plan)
        seconds = asyncio.run(_drive(load, workers, plan))
        checks = _checks(settings, str(user.id), plan.drain_seconds)
        records = httpx.get(f"{model_url}/_offline/requests", timeout=30).json()
    finally:
        if workers is not None:
            processes.append(workers.process)
        _stop(processes)
    tally = load.tally
    latencies = tally.latencies_ms
    outcomes = Counter(str(r.get("outcome")) for r in records)
    notes = []
    if tally.mismatched:
        notes.append(
            f"replies whose streamed text differs from the stored text: {tally.mismatched[:10]}"
        )
    return SoakReport(
        measured_at=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        plan=asdict(plan),
        seconds=round(seconds, 1),
        turns=tally.completed + sum(tally.failed.values()),
        completed=tally.completed,
        failed=dict(sorted(tally.failed.items())),
        client_errors=dict(sorted(tally.client_errors.items())),
        p50_ms=round(_pct(latencies, 50), 1) if latencies else float("nan"),
        p95_ms=round(_pct(latencies, 95), 1) if latencies else float("nan"),
        max_ms=round(max(latencies), 1) if latencies else float("nan"),
        resets=tally.resets,
        resumes=tally.resumes,
        kills=workers.kills if workers else 0,
        model_requests=dict(sorted(outcomes.items())),
        stored=checks["stored"],
        stuck=checks["stuck"],
        duplicated=checks["duplicated"],
        mismatched=len(tally.mismatched),
        notes=notes,
    )


def soak_json(report: SoakReport) -> str:
    return json.dumps({**asdict(report), "ok": report.ok}, indent=2)


def soak_report(command: str, report: SoakReport) -> str:
    """The docs/benchmarks.md section."""
    plan = report.plan

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items()) or "none"

    total_calls = sum(report.model_requests.values())
    faulted = {k: v for k, v in report.model_requests.items() if k != "ok"}
    faults = sum(faulted.values())
    lines = [
        f"## {TITLE}",
        "",
        f"Measured {report.measured_at} on {report.machine}.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"{plan['conversations']} clients streaming turns for {report.seconds:g} s against the "
        f"offline model with {plan['fault_rate']:.0%} of model calls faulted "
        f"({plan['fault_kinds']}, evenly; a hang lasts {plan['hang_seconds']:g} s against a "
        f"{plan['model_timeout_seconds']:g} s model timeout), the worker killed with SIGKILL "
        f"and restarted every {plan['kill_every']:g} s (lease {plan['lease_seconds']} s).",
        "",
        "| | |",
        "|---|---|",
        f"| replies followed to the end | {report.turns} |",
        f"| completed | {report.completed} |",
        f"| failed, by error | {counts(report.failed)} |",
        f"| client errors | {counts(report.client_errors)} |",
        f"| send → completed p50 / p95 / max | {report.p50_ms:.0f} / {report.p95_ms:.0f} / "
        f"{report.max_ms:.0f} ms |",
        f"| `message.reset` seen / streams resumed | {report.resets} / {report.resumes} |",
        f"| worker kills | {report.kills} |",
        f"| model calls (faulted) | {total_calls} ({faults}: {counts(faulted)}) |",
        f"| stored replies | {counts(report.stored)} |",
        f"| stuck (queued/running at the end) | {report.stuck} |",
        f"| duplicated replies | {report.duplicated} |",
        f"| streamed text ≠ stored text | {report.mismatched} |",
        f"| verdict | {'ok' if report.ok else 'FAILED'} |",
    ]
    lines.extend(f"\n{note}" for note in report.notes)
    return "\n".join(lines) + "\n"
