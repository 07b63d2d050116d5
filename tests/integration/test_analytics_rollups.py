"""The analytics rollups (supabase/migrations/20261130180100_analytics_rollups.sql) agree with a
full recount of the tables, whatever wrote the rows: generated activity written with the triggers
on, then updates (replies finishing and failing, rows moved across day boundaries, retries,
feedback changing its mind), deletes (feedback, conversations, a deployment, a whole user) and
new rows. The reports from the rollups equal the recount in UTC, in New York and filtered by
agent, and `private.analytics_rebuild()` (for loads made with triggers off) rebuilds the same
rollups the triggers kept.

The presence bitmaps (20261130190000_analytics_presence_bitmaps.sql) hold exactly the users a
recount of `analytics_user_hours` finds, per UTC hour and per UTC day and agent, through inserts,
deletes of messages and of whole conversations, a user in two agents in one hour, a user's last
message of a day deleted, two writers racing on one cell, and a rebuild; the unfiltered stats,
which count users from them, equal the recount for ranges whose ends cut UTC days."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
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
    # The whole history, then ranges whose ends fall inside it: in New York and Tokyo their ends
    # cut UTC days (the bitmaps' partial days), and a one-day range in Tokyo holds no whole UTC
    # day at all.
    ranges = [
        (today - timedelta(days=95), today + timedelta(days=1)),
        (today - timedelta(days=40), today - timedelta(days=20)),
        (today - timedelta(days=10), today - timedelta(days=10)),
        (today - timedelta(days=6), today - timedelta(days=4)),
    ]
    busiest = conn.execute(
        "select a.slug from public.marketplace_agents a order by a.deploy_count desc, a.slug"
        " limit 1"
    ).fetchone()
    assert busiest is not None
    assert_presence_matches(conn)
    for first, last in ranges:
        start, end = str(first), str(last)
        for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
            for agent in (None, busiest[0]):
                for kind in ("stats", "metrics"):
                    rolled = report(conn, f"marketplace_{kind}_rollup", start, end, tz, agent)
                    counted = report(conn, f"marketplace_{kind}_recount", start, end, tz, agent)
                    assert rolled == counted, (kind, start, end, tz, agent)
    start, end = str(ranges[0][0]), str(ranges[0][1])
    stats = report(conn, "marketplace_stats_rollup", start, end, "UTC")
    assert stats["totals"]["user_messages"] > 0 and stats["feedback"]["likes"] > 0
    assert stats["totals"]["unique_users"] > 0


def presence_cells(conn: psycopg.Connection) -> dict[str, Any]:
    """The bitmaps as the users whose bits are set (independent of how users are numbered)."""
    hours = conn.execute(
        "select p.hour, array_agg(k.user_id order by k.user_id)"
        "  from private.analytics_presence_hours p"
        "  join private.analytics_user_keys k"
        "    on k.user_key < length(p.users) and get_bit(p.users, k.user_key) = 1"
        " group by p.hour order by p.hour"
    ).fetchall()
    days = conn.execute(
        "select p.day, p.agent_id, array_agg(k.user_id order by k.user_id)"
        "  from private.analytics_presence_days p"
        "  join private.analytics_user_keys k"
        "    on k.user_key < length(p.users) and get_bit(p.users, k.user_key) = 1"
        " group by p.day, p.agent_id order by p.day, p.agent_id"
    ).fetchall()
    return {"hours": hours, "days": days}


def assert_presence_matches(conn: psycopg.Connection) -> None:
    """Every cell's bits are exactly the users a recount of analytics_user_hours finds, no bit
    is set that belongs to no user, and no cell is left all zeros."""
    recount = {
        "hours": conn.execute(
            "select u.hour, array_agg(distinct u.user_id order by u.user_id)"
            "  from private.analytics_user_hours u group by u.hour order by u.hour"
        ).fetchall(),
        "days": conn.execute(
            "select (u.hour at time zone 'UTC')::date, u.agent_id,"
            "       array_agg(distinct u.user_id order by u.user_id)"
            "  from private.analytics_user_hours u group by 1, 2 order by 1, 2"
        ).fetchall(),
    }
    assert presence_cells(conn) == recount
    bits = conn.execute(
        "select (select coalesce(sum(bit_count(users)), 0) from private.analytics_presence_hours),"
        "       (select coalesce(sum(bit_count(users)), 0) from private.analytics_presence_days),"
        "       (select count(*) from private.analytics_presence_hours where bit_count(users) = 0)"
        "     + (select count(*) from private.analytics_presence_days where bit_count(users) = 0)"
    ).fetchone()
    assert bits == (
        sum(len(users) for _, users in recount["hours"]),
        sum(len(users) for _, _, users in recount["days"]),
        0,
    )
    # Every chatting user has a number, and numbers are not shared.
    keys = conn.execute(
        "select count(*), count(distinct user_key),"
        "       (select count(*) from (select distinct user_id from private.analytics_user_hours) u"
        "         where not exists (select 1 from private.analytics_user_keys k"
        "                            where k.user_id = u.user_id))"
        "  from private.analytics_user_keys"
    ).fetchone()
    assert keys is not None and keys[0] == keys[1] and keys[2] == 0


def fold(conn: psycopg.Connection) -> int:
    """The worker's fold of the change rows into the cells (supabase/migrations/
    20261201010000_analytics_change_rows.sql): how many it moved."""
    row = conn.execute("select private.analytics_fold()").fetchone()
    assert row is not None
    return int(row[0])


def hourly_cells(
    conn: psycopg.Connection, view: str = "analytics_hourly_cells"
) -> list[tuple[Any, ...]]:
    """The hourly rollup summed by key: its table alone, without the changes not folded yet, or
    `analytics_hourly`, the view of both that the reports read."""
    return conn.execute(
        "select hour, agent_id, sum(deployments)::int, sum(conversations)::int,"
        f" sum(user_messages)::int from private.{view} group by 1, 2"
        " having sum(deployments) <> 0 or sum(conversations) <> 0 or sum(user_messages) <> 0"
        " order by 1, 2"
    ).fetchall()


def rollup_rows(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "hourly": hourly_cells(conn, view="analytics_hourly"),
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
    assert_rollups_match(conn)  # the hourly rollup read as its cells plus the unfolded changes
    assert fold(conn) > 0
    assert_rollups_match(conn)

    for statement in MUTATIONS:
        with conn.transaction():
            conn.execute(statement)
    assert_rollups_match(conn)  # folded cells plus the mutations' changes

    kept = rollup_rows(conn)
    kept_presence = presence_cells(conn)
    fold(conn)
    assert hourly_cells(conn) == kept["hourly"]  # the cells alone, once everything is folded
    conn.execute("select private.analytics_rebuild()")
    assert rollup_rows(conn) == kept
    assert hourly_cells(conn) == kept["hourly"]
    assert presence_cells(conn) == kept_presence
    # The rebuild numbers the chatting users densely again, from 0.
    dense = conn.execute(
        "select count(*) = max(user_key) + 1 and min(user_key) = 0,"
        "       count(*) = (select count(distinct user_id) from private.analytics_user_hours)"
        "  from private.analytics_user_keys"
    ).fetchone()
    assert dense == (True, True)
    assert_rollups_match(conn)


def test_a_half_hour_zone_is_recounted(conn: psycopg.Connection) -> None:
    aligned = conn.execute(
        "select private.analytics_hour_aligned('2026-11-01', '2026-11-07', 'America/New_York'),"
        " private.analytics_hour_aligned('2026-11-01', '2026-11-07', 'Asia/Kolkata'),"
        " private.analytics_hour_aligned('2026-11-01', '2026-11-07', 'Asia/Kathmandu')"
    ).fetchone()
    assert aligned == (True, False, False)


DAY = date(2026, 10, 5)


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
        hours=hour, minutes=minute
    )


class Chats:
    """Users chatting with two agents, written with the triggers on (as any client would)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.agents: dict[str, uuid.UUID] = {}
        self.convs: dict[tuple[str, str], uuid.UUID] = {}
        for slug in ("bitmap-a", "bitmap-b"):
            row = conn.execute(
                "insert into public.marketplace_agents (slug, name, category, kind,"
                " pricing_model, is_published) values (%s, %s, 'testing', 'chat', 'free', true)"
                " returning id",
                (slug, slug),
            ).fetchone()
            assert row is not None
            self.agents[slug] = row[0]
        self.users = {name: uuid.uuid4() for name in ("u1", "u2", "u3")}
        for name, user in self.users.items():
            conn.execute(
                "insert into auth.users (id, email, raw_app_meta_data) values (%s, %s, '{}')",
                (user, f"{name}-{user.hex[:8]}@bitmaps.test"),
            )

    def conversation(self, user: str, agent: str) -> uuid.UUID:
        if (user, agent) not in self.convs:
            row = self.conn.execute(
                "with d as (insert into public.agent_deployments (user_id, agent_id, name,"
                " status, created_at) values (%(u)s, %(a)s, 'bitmaps', 'active', %(t)s)"
                " returning id, user_id)"
                " insert into public.agent_conversations (deployment_id, user_id, created_at)"
                " select id, user_id, %(t)s from d returning id",
                {"u": self.users[user], "a": self.agents[agent], "t": at(0, 1)},
            ).fetchone()
            assert row is not None
            self.convs[(user, agent)] = row[0]
        return self.convs[(user, agent)]

    def say(
        self, user: str, agent: str, when: datetime, conn: psycopg.Connection | None = None
    ) -> uuid.UUID:
        row = (
            (conn or self.conn)
            .execute(
                "insert into public.agent_messages (conversation_id, user_id, role, content,"
                " status, created_at, completed_at)"
                " values (%s, %s, 'user', 'hello', 'completed', %s, %s) returning id",
                (self.conversation(user, agent), self.users[user], when, when),
            )
            .fetchone()
        )
        assert row is not None
        message: uuid.UUID = row[0]
        return message

    def delete(self, message: uuid.UUID, conn: psycopg.Connection | None = None) -> None:
        (conn or self.conn).execute("delete from public.agent_messages where id = %s", (message,))

    def hour_users(self, hour: datetime) -> set[str]:
        return self._names(
            "select k.user_id from private.analytics_presence_hours p"
            "  join private.analytics_user_keys k"
            "    on k.user_key < length(p.users) and get_bit(p.users, k.user_key) = 1"
            " where p.hour = %s",
            (hour,),
        )

    def day_users(self, day: date, agent: str) -> set[str]:
        return self._names(
            "select k.user_id from private.analytics_presence_days p"
            "  join private.analytics_user_keys k"
            "    on k.user_key < length(p.users) and get_bit(p.users, k.user_key) = 1"
            " where p.day = %s and p.agent_id = %s",
            (day, self.agents[agent]),
        )

    def _names(self, query: str, params: tuple[Any, ...]) -> set[str]:
        ids = {r[0] for r in self.conn.execute(query, params).fetchall()}
        return {name for name, user in self.users.items() if user in ids}


def assert_stats_match(conn: psycopg.Connection) -> None:
    """The stats (bitmaps when unfiltered) equal the recount around DAY in three zones."""
    for first, last in ((DAY - timedelta(days=1), DAY + timedelta(days=1)), (DAY, DAY)):
        for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
            for agent in (None, "bitmap-a"):
                rolled = report(conn, "marketplace_stats_rollup", str(first), str(last), tz, agent)
                counted = report(
                    conn, "marketplace_stats_recount", str(first), str(last), tz, agent
                )
                assert rolled == counted, (first, last, tz, agent)


def test_presence_bitmaps_follow_inserts_and_deletes(conn: psycopg.Connection) -> None:
    chats = Chats(conn)
    # u1 talks to both agents in the same hour; u2 twice to A; u3 late in the UTC day and
    # after midnight (the next day in Tokyo, the same day in New York).
    u1_a = chats.say("u1", "bitmap-a", at(10, 5))
    chats.say("u1", "bitmap-b", at(10, 20))
    u2_first = chats.say("u2", "bitmap-a", at(10, 30))
    u2_later = chats.say("u2", "bitmap-a", at(14))
    chats.say("u3", "bitmap-a", at(23, 30))
    chats.say("u3", "bitmap-a", at(1, day=DAY + timedelta(days=1)))
    assert chats.hour_users(at(10)) == {"u1", "u2"}
    assert chats.day_users(DAY, "bitmap-a") == {"u1", "u2", "u3"}
    assert chats.day_users(DAY, "bitmap-b") == {"u1"}
    assert_presence_matches(conn)
    assert_stats_match(conn)
    stats = report(conn, "marketplace_stats_rollup", str(DAY), str(DAY), "UTC")
    assert stats["totals"]["unique_users"] == 3
    assert {p["slug"]: p["unique_users"] for p in stats["popular_agents"]} == {
        "bitmap-a": 3,
        "bitmap-b": 1,
    }

    # u1's message to A goes: the hour keeps u1 (B), A's day loses u1.
    chats.delete(u1_a)
    assert chats.hour_users(at(10)) == {"u1", "u2"}
    assert chats.day_users(DAY, "bitmap-a") == {"u2", "u3"}
    assert chats.day_users(DAY, "bitmap-b") == {"u1"}
    assert_presence_matches(conn)

    # u2's 14:00 message goes: that hour's cell is empty and goes; u2 still chatted at 10:30.
    chats.delete(u2_later)
    assert chats.hour_users(at(14)) == set()
    assert conn.execute(
        "select count(*) from private.analytics_presence_hours where hour = %s", (at(14),)
    ).fetchone() == (0,)
    assert chats.day_users(DAY, "bitmap-a") == {"u2", "u3"}
    # ... and u2's last message of the day goes: the day's bit is cleared.
    chats.delete(u2_first)
    assert chats.hour_users(at(10)) == {"u1"}
    assert chats.day_users(DAY, "bitmap-a") == {"u3"}
    assert_presence_matches(conn)
    assert_stats_match(conn)


def test_presence_bitmaps_after_a_conversation_is_deleted_and_a_rebuild(
    conn: psycopg.Connection,
) -> None:
    chats = Chats(conn)
    chats.say("u1", "bitmap-b", at(10, 20))
    chats.say("u3", "bitmap-a", at(23, 30))
    chats.say("u3", "bitmap-a", at(1, day=DAY + timedelta(days=1)))
    # u2 chats, takes it back (bits cleared), and comes back (bits set again).
    chats.delete(chats.say("u2", "bitmap-a", at(10, 50)))
    assert chats.hour_users(at(10)) == {"u1"}
    assert chats.day_users(DAY, "bitmap-a") == {"u3"}
    chats.say("u2", "bitmap-a", at(10, 55))
    assert chats.hour_users(at(10)) == {"u1", "u2"}
    assert chats.day_users(DAY, "bitmap-a") == {"u2", "u3"}

    # u1's whole conversation with B is deleted (its messages cascade).
    conn.execute(
        "delete from public.agent_conversations where id = %s", (chats.convs[("u1", "bitmap-b")],)
    )
    assert chats.hour_users(at(10)) == {"u2"}
    assert chats.day_users(DAY, "bitmap-b") == set()
    assert_presence_matches(conn)
    assert_stats_match(conn)

    # The rebuild finds the same cells; the unfiltered stats read them (empty cells: no users),
    # the filtered ones do not.
    kept = presence_cells(conn)
    conn.execute("select private.analytics_rebuild_presence()")
    assert presence_cells(conn) == kept
    assert_stats_match(conn)
    conn.execute("truncate private.analytics_presence_hours, private.analytics_presence_days")
    unfiltered = report(conn, "marketplace_stats_rollup", str(DAY), str(DAY), "UTC")
    filtered = report(conn, "marketplace_stats_rollup", str(DAY), str(DAY), "UTC", "bitmap-a")
    assert unfiltered["totals"]["unique_users"] == 0
    assert filtered["totals"]["unique_users"] == 2


def wait_for_lock_wait(conn: psycopg.Connection, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "select count(*) from pg_stat_activity"
            " where datname = current_database() and wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row[0] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the second writer never waited for the first")


@pytest.mark.parametrize("first", ["adder", "remover"])
def test_a_clear_and_an_add_racing_on_one_cell(
    db_url: str, conn: psycopg.Connection, first: str
) -> None:
    """u1's only message of the hour to A is deleted while u1 writes to B in the same hour, in
    two transactions: whichever locks the hour's cell first, u1's bit stays set."""
    chats = Chats(conn)
    u1_a = chats.say("u1", "bitmap-a", at(9, 10))
    chats.conversation("u1", "bitmap-b")
    with psycopg.connect(db_url) as adder, psycopg.connect(db_url) as remover:

        def add() -> None:
            chats.say("u1", "bitmap-b", at(9, 40), adder)

        def remove() -> None:
            chats.delete(u1_a, remover)

        steps = (add, remove) if first == "adder" else (remove, add)
        holder = adder if first == "adder" else remover
        steps[0]()  # holds the hour's cell until it commits
        errors: list[Exception] = []

        def second() -> None:
            try:
                steps[1]()
                (remover if first == "adder" else adder).commit()
            except Exception as e:
                errors.append(e)

        thread = threading.Thread(target=second)
        thread.start()
        wait_for_lock_wait(conn)
        holder.commit()
        thread.join(10)
        assert not thread.is_alive() and not errors, errors
    assert chats.hour_users(at(9)) == {"u1"}
    assert chats.day_users(DAY, "bitmap-a") == set()
    assert chats.day_users(DAY, "bitmap-b") == {"u1"}
    assert_presence_matches(conn)
