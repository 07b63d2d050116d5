"""The analytics rollups (supabase/migrations/20261130180100_analytics_rollups.sql) agree with a
full recount of the tables, whatever wrote the rows: generated activity written with the triggers
on, then updates (replies finishing and failing, rows moved across day boundaries, retries,
feedback changing its mind), deletes (feedback, conversations, a deployment, a whole user) and
new rows. The reports from the rollups equal the recount in UTC, in New York and filtered by
agent, and `private.analytics_rebuild()` (for loads made with triggers off) rebuilds the same
rollups the triggers kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agentmarket.devtools.analytics_fixture import Fixture, generate

pytestmark = pytest.mark.db

ADMIN = json.dumps(
    {
        "sub": "00000000-0000-4000-8000-00000000ad01",
        "role": "authenticated",
        "app_metadata": {"role": "admin"},
    }
)


def report(
    conn: psycopg.Connection, function: str, start: str, end: str, tz: str, agent: str | None = None
) -> Any:
    row = conn.execute(
        f"select private.{function}(%s::date, %s::date, %s, %s)",
        (start, end, tz, agent),
    ).fetchone()
    assert row is not None
    return row[0]


def assert_rollups_match(conn: psycopg.Connection) -> None:
    today = datetime.now(UTC).date()
    start, end = str(today - timedelta(days=95)), str(today + timedelta(days=1))
    busiest = conn.execute(
        "select a.slug from public.marketplace_agents a order by a.deploy_count desc, a.slug"
        " limit 1"
    ).fetchone()
    assert busiest is not None
    for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
        for agent in (None, busiest[0]):
            for kind in ("stats", "metrics"):
                rolled = report(conn, f"marketplace_{kind}_rollup", start, end, tz, agent)
                counted = report(conn, f"marketplace_{kind}_recount", start, end, tz, agent)
                assert rolled == counted, (kind, tz, agent)
    stats = report(conn, "marketplace_stats_rollup", start, end, "UTC")
    assert stats["totals"]["user_messages"] > 0 and stats["feedback"]["likes"] > 0


def rollup_rows(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "hourly": conn.execute(
            "select * from private.analytics_hourly"
            " where deployments <> 0 or conversations <> 0 or user_messages <> 0 order by 1, 2"
        ).fetchall(),
        "user_hours": conn.execute(
            "select * from private.analytics_user_hours order by 1, 2, 3"
        ).fetchall(),
        "replies": conn.execute("select * from private.analytics_replies order by 1").fetchall(),
        "feedback": conn.execute("select * from private.analytics_feedback order by 1").fetchall(),
    }


MUTATIONS = [
    # Replies finish, fail, and move across a day boundary (questions too).
    """update public.agent_messages set status = 'failed', error_code = 'upstream_timeout',
              latency_ms = null, ttft_ms = null, prompt_tokens = null, completion_tokens = null
        where id in (select id from public.agent_messages
                      where role = 'assistant' and status = 'completed' order by id limit 40)""",
    """update public.agent_messages set status = 'completed', error_code = null,
              latency_ms = 4321, ttft_ms = 321, prompt_tokens = 11, completion_tokens = 22
        where id in (select id from public.agent_messages
                      where role = 'assistant' and status = 'cancelled' order by id limit 10)""",
    """update public.agent_messages set created_at = created_at - interval '7 hours'
        where id in (select id from public.agent_messages order by id desc limit 60)""",
    # Retries come and go.
    """update private.chat_jobs set attempts = 3
        where id in (select id from private.chat_jobs where attempts = 1 order by id limit 30)""",
    """update private.chat_jobs set attempts = 1
        where id in (select id from private.chat_jobs where attempts > 1 order by id limit 5)""",
    # Feedback changes its mind, or is withdrawn.
    """update public.message_feedback
          set rating = case rating when 'like' then 'dislike' else 'like' end
        where id in (select id from public.message_feedback order by id limit 15)""",
    """delete from public.message_feedback
        where id in (select id from public.message_feedback order by id desc limit 15)""",
    # Conversations (their messages and feedback cascade), a deployment, a whole user.
    """delete from public.agent_conversations
        where id in (select id from public.agent_conversations order by id limit 12)""",
    """delete from public.agent_deployments
        where id in (select id from public.agent_deployments order by id desc limit 3)""",
    """delete from auth.users
        where id = (select user_id from public.agent_deployments order by id limit 1)""",
    # New activity after all that.
    """with d as (
         insert into public.agent_deployments (user_id, agent_id, name, status, created_at)
         select user_id, agent_id, 'late', 'active', now() - interval '3 days'
           from public.agent_deployments order by id limit 1
         returning id, user_id),
       c as (
         insert into public.agent_conversations (deployment_id, user_id, created_at)
         select id, user_id, now() - interval '2 days' from d returning id, user_id),
       q as (
         insert into public.agent_messages (conversation_id, user_id, role, content, status,
                                            created_at, completed_at)
         select id, user_id, 'user', 'late question', 'completed', now() - interval '2 days',
                now() - interval '2 days' from c returning id, conversation_id, user_id)
       insert into public.agent_messages (conversation_id, user_id, role, content, status,
                                          reply_to, latency_ms, ttft_ms, created_at, completed_at)
       select conversation_id, user_id, 'assistant', 'late answer', 'completed', id, 900, 90,
              now() - interval '2 days', now() - interval '2 days' from q""",
]


def test_rollups_equal_a_full_recount_after_inserts_updates_and_deletes(
    db_url: str, conn: psycopg.Connection
) -> None:
    generate(
        db_url,
        Fixture(messages=6000, conversations=600, deployments=80, users=40, agents=20),
        triggers=True,
    )
    conn.execute("select set_config('request.jwt.claims', %s, false)", (ADMIN,))
    assert_rollups_match(conn)

    for statement in MUTATIONS:
        with conn.transaction():
            conn.execute(statement)
    assert_rollups_match(conn)

    kept = rollup_rows(conn)
    conn.execute("select private.analytics_rebuild()")
    assert rollup_rows(conn) == kept
    assert_rollups_match(conn)


def test_a_half_hour_zone_is_recounted(conn: psycopg.Connection) -> None:
    aligned = conn.execute(
        "select private.analytics_hour_aligned('2026-11-01', '2026-11-07', 'America/New_York'),"
        " private.analytics_hour_aligned('2026-11-01', '2026-11-07', 'Asia/Kolkata'),"
        " private.analytics_hour_aligned('2026-11-01', '2026-11-07', 'Asia/Kathmandu')"
    ).fetchone()
    assert aligned == (True, False, False)
