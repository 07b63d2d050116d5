"""The worker's claim statement (claim_chat_jobs: the claim and each job's context in one
statement) stays an index lookup per claimed job however many messages the database holds, also
in the generic plan the driver switches to after a few runs: it once merged the claimed rows with
every message in key order, CPU that grew with the table (docs/benchmarks.md)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest

from agentmarket.db.queries import query
from tests.integration.test_queue import make_jobs

pytestmark = pytest.mark.db

MESSAGES = 6000
CONVERSATIONS = 300
PARAMETER = re.compile(r"%\((\w+)\)s")


def positional(sql: str) -> tuple[str, list[str]]:
    """The named query with $1, $2, … in order of first use, and those names."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return PARAMETER.sub(number, sql).rstrip().rstrip(";"), names


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(nodes(child))
    return found


def test_the_claims_generic_plan_looks_up_each_claimed_job(conn: psycopg.Connection) -> None:
    [job, *_] = make_jobs(conn, 3)
    # Many other conversations with their messages (the claimed jobs' own stay short).
    conn.execute(
        "with c as ("
        "  insert into public.agent_conversations (deployment_id, user_id)"
        "  select c.deployment_id, c.user_id from private.chat_jobs j"
        "    join public.agent_messages m on m.id = j.message_id"
        "    join public.agent_conversations c on c.id = m.conversation_id,"
        "         generate_series(1, %s)"
        "   where j.id = %s"
        "  returning id, user_id)"
        " insert into public.agent_messages (conversation_id, user_id, role, content, status)"
        " select c.id, c.user_id, 'user', 'm' || n, 'completed' from c, generate_series(1, %s) n",
        (CONVERSATIONS, job, MESSAGES // CONVERSATIONS),
    )
    conn.execute("analyze public.agent_messages")

    sql, names = positional(query("claim_chat_jobs"))
    types = {
        "worker_id": "text",
        "limit": "int",
        "lease_seconds": "int",
        "history_limit": "int",
        "running": "bigint[]",
    }
    assert set(names) == set(types)
    conn.execute("set plan_cache_mode = force_generic_plan")
    conn.execute(f"prepare claim ({', '.join(types[n] for n in names)}) as {sql}")
    values = {
        "worker_id": "'w'",
        "limit": "8",
        "lease_seconds": "30",
        "history_limit": "20",
        "running": "'{}'",
    }
    explained = conn.execute(
        f"explain (format json) execute claim ({', '.join(values[n] for n in names)})"
    ).fetchone()
    assert explained is not None
    plan = explained[0][0]["Plan"]

    # The planner knows a claim returns a handful of jobs (the function's ROWS): with its
    # default of 1000 a merge over all messages in key order can look cheaper, and did on a
    # database of 10 000 messages (50 ms of CPU per claim).
    [claim] = [n for n in nodes(plan) if n.get("Function Name") == "claim_chat_jobs_counted"]
    assert claim["Plan Rows"] <= 10, claim
    # Each claimed job's context by its own lookups (private.chat_job_context): no scan or merge
    # over a table in the statement.
    assert not any(n["Node Type"] in ("Seq Scan", "Merge Join", "Hash Join") for n in nodes(plan))
    assert [n["Function Name"] for n in nodes(plan) if "Function Name" in n] == [
        "claim_chat_jobs_counted",
        "chat_job_context",
    ]


def test_the_context_is_read_with_a_snapshot_taken_after_the_claim(
    conn: psycopg.Connection,
) -> None:
    """A VOLATILE function takes a fresh snapshot for each statement it runs, so the context
    sees a reply whose send committed after the claim statement began (and that the claim, with
    its own snapshot, claimed); a STABLE one would read with the statement's."""
    row = conn.execute(
        "select p.provolatile, p.prosecdef from pg_proc p"
        " where p.oid = 'private.chat_job_context(uuid, integer)'::regprocedure"
    ).fetchone()
    assert row == ("v", False)


def test_the_functions_run_for_every_message_keep_their_plans(conn: psycopg.Connection) -> None:
    """A LANGUAGE sql function with `SET search_path` is never inlined, and PostgreSQL 15 plans
    it again in every statement that calls it (chat_job_context: 1.7 ms a call, 0.26 ms for its
    query with a kept plan); PL/pgSQL keeps its plans for the connection
    (20261201040000_hot_path_plpgsql.sql)."""
    rows = conn.execute(
        "select p.proname, l.lanname from pg_proc p join pg_language l on l.oid = p.prolang"
        " where p.oid = any(array['private.chat_job_context(uuid, integer)',"
        " 'private.analytics_bucket(integer)', 'private.analytics_histogram_unit(smallint)']"
        "::regprocedure[]) order by 1"
    ).fetchall()
    assert rows == [
        ("analytics_bucket", "plpgsql"),
        ("analytics_histogram_unit", "plpgsql"),
        ("chat_job_context", "plpgsql"),
    ]
