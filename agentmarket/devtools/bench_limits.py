"""`agentmarket bench limits`: what the limits add to a chat send (docs/benchmarks.md).

A chat send is one statement, `private.send_chat_message`, which checks the limits inside (replies
in flight, the platform-key budget, the user's and the deployment's GCRA rates). This measures it
as the API runs it, a caller transaction (BEGIN with the role and claims, the statement, COMMIT),
from `concurrency` users at once (each on its own deployment, pausing between sends like a
conversation waiting for its reply), alternating in rounds between:

* limits on: `private.send_chat_message` as migrated, with limits high enough to admit everything
  (so every check runs and none refuses);
* limits off: the same function as it was before the limits
  (supabase/migrations/20261129140000_chat_queue.sql), installed as
  `bench_unlimited.send_chat_message`.

Both run in a throwaway copy of the database (created from DATABASE_URL's database as a template,
dropped afterwards). After each timed send its reply is marked completed, untimed, so replies in
flight stay as few as a real user's.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agentmarket.core import paths
from agentmarket.ops.tokens import ensure_user

__all__ = ["LimitsRun", "limits_report", "run_limits"]

OLD_SEND = re.compile(
    r"create or replace function private\.send_chat_message\(.*?\n\$\$;", re.S | re.I
)
SEND = "select * from {}.send_chat_message(%s, null, 'bench message', null, null)"
MODES = {"limits on": "private", "limits off": "bench_unlimited"}


@dataclass
class LimitsRun:
    concurrency: int
    sends: int
    pause_ms: int
    latencies: dict[str, list[float]]

    def pct(self, mode: str, p: float) -> float:
        values = sorted(self.latencies[mode])
        return values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000


def _url(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)  # type: ignore[arg-type]


def _unlimited_send() -> str:
    """The send as it was before the limits, as bench_unlimited.send_chat_message."""
    source = (paths.migrations_dir() / "20261129140000_chat_queue.sql").read_text(encoding="utf-8")
    match = OLD_SEND.search(source)
    if match is None:
        raise RuntimeError("the pre-limits send_chat_message was not found")
    return match.group(0).replace("private.send_chat_message", "bench_unlimited.send_chat_message")


def _prepare(url: str, concurrency: int) -> list[tuple[str, uuid.UUID]]:
    """Users, their deployments and generous limits in the copy; (claims JSON, deployment)."""
    callers = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create schema bench_unlimited")
        conn.execute(_unlimited_send())
        conn.execute("grant usage on schema bench_unlimited to authenticated")
        conn.execute(
            "grant execute on function bench_unlimited.send_chat_message"
            "(uuid, uuid, text, text, text) to authenticated"
        )
        conn.execute(
            "update private.app_settings set chat_per_minute = 100000,"
            " max_in_flight_per_user = 10000, platform_tokens_per_day = 1000000000000"
        )
        conn.execute("update public.marketplace_agents set rate_limit_per_minute = 10000")
        agent = conn.execute(
            "select id from public.marketplace_agents where slug = 'sql-sidekick'"
        ).fetchone()
        assert agent is not None
        for i in range(concurrency):
            user = ensure_user(conn, email=f"bench-limits-{i}@example.com")
            row = conn.execute(
                "insert into public.agent_deployments (user_id, agent_id, name, status)"
                " values (%s, %s, 'bench', 'active') returning id",
                (user.id, agent[0]),
            ).fetchone()
            assert row is not None
            claims = json.dumps({"sub": str(user.id), "role": "authenticated"})
            callers.append((claims, row[0]))
    return callers


async def _send_loop(
    url: str,
    claims: str,
    deployment: uuid.UUID,
    schema: str,
    count: int,
    out: list[float],
    pause: float = 0.0,
) -> None:
    statement = sql.SQL(SEND).format(sql.Identifier(schema))
    begin = sql.SQL(
        "begin; select set_config('role', 'authenticated', true),"
        " set_config('request.jwt.claims', {}, true)"
    ).format(sql.Literal(claims))
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, prepare_threshold=None
    ) as conn:
        for _ in range(count):
            started = time.perf_counter()
            await conn.execute(begin)
            cur = await conn.execute(statement, (deployment,))
            row = await cur.fetchone()
            await conn.execute("commit")
            out.append(time.perf_counter() - started)
            assert row is not None
            await conn.execute(
                "update public.agent_messages set status = 'completed', completed_at = now()"
                " where id = %s",
                (row[2],),
            )
            await asyncio.sleep(pause)


async def _measure(
    url: str, callers: list[tuple[str, uuid.UUID]], sends: int, rounds: int, pause: float
) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_caller = max(sends // (rounds * len(callers)), 1)
    # A warm-up of each, then the modes alternate so drift hits both alike.
    for schema in MODES.values():
        await asyncio.gather(*(_send_loop(url, c, d, schema, 5, []) for c, d in callers))
    for _ in range(rounds):
        for mode, schema in MODES.items():
            await asyncio.gather(
                *(
                    _send_loop(url, c, d, schema, per_caller, latencies[mode], pause)
                    for c, d in callers
                )
            )
    return latencies


def run_limits(
    database_url: str, *, concurrency: int, sends: int, pause_ms: int = 200, rounds: int = 5
) -> LimitsRun:
    """Measure both modes in a throwaway copy of DATABASE_URL's database."""
    source = conninfo_to_dict(database_url).get("dbname") or "postgres"
    copy = f"agentmarket_bench_limits_{uuid.uuid4().hex[:8]}"
    admin = _url(database_url, "template1")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(copy), sql.Identifier(str(source))
            )
        )
    try:
        url = _url(database_url, copy)
        callers = _prepare(url, concurrency)
        latencies = asyncio.run(_measure(url, callers, sends, rounds, pause_ms / 1000))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(copy))
            )
    return LimitsRun(concurrency, sends, pause_ms, latencies)


def limits_report(command: str, run: LimitsRun, measured_at: str) -> str:
    on, off = "limits on", "limits off"
    rows = [
        f"| {mode} | {len(run.latencies[mode])} | {run.pct(mode, 50):.2f} ms "
        f"| {run.pct(mode, 95):.2f} ms | {run.pct(mode, 99):.2f} ms |"
        for mode in (off, on)
    ]
    added = run.pct(on, 50) - run.pct(off, 50)
    return "\n".join(
        [
            "## Limits: what they add to a chat send",
            "",
            f"Measured {measured_at}. {run.concurrency} conversations at once: {run.concurrency} "
            "users, each sending to its own deployment and pausing "
            f"{run.pause_ms} ms between sends (0: back to back, a saturation test). Each send is "
            "the API's caller transaction (BEGIN with role and claims, `send_chat_message`, "
            "COMMIT) timed from the client, the two modes alternating in rounds in a throwaway "
            "copy of the database.",
            "",
            "```",
            command,
            "```",
            "",
            "| send_chat_message | sends | p50 | p95 | p99 |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Median send with the limits minus without: {added:+.2f} ms (the limits count the "
            "replies in flight, look up the platform-key budget and take from two GCRA keys). "
            "Limits off is the function as it was before them "
            "(supabase/migrations/20261129140000_chat_queue.sql).",
            "",
        ]
    )
