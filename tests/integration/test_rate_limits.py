"""GCRA in Postgres (private.rate_limit_take): a burst of N, then one every period/N; a refused
take changes nothing; concurrent takes never admit more than the quota; stale keys go away."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import psycopg
import pytest

pytestmark = pytest.mark.db

TAKE = "select * from private.rate_limit_take(%s, %s, %s)"


def take(conn: psycopg.Connection, key: str, limit: int, period: int) -> tuple[bool, int, int, int]:
    row = conn.execute(TAKE, (key, limit, period)).fetchone()
    assert row is not None
    return bool(row[0]), int(row[1]), int(row[2]), int(row[3])


def tat(conn: psycopg.Connection, key: str) -> object:
    row = conn.execute("select tat from private.rate_limits where key = %s", (key,)).fetchone()
    return row[0] if row else None


def test_a_burst_then_one_per_interval(conn: psycopg.Connection) -> None:
    # 2 per 2 s: a burst of 2, then one more each second.
    assert take(conn, "k", 2, 2)[:2] == (True, 1)
    assert take(conn, "k", 2, 2)[:2] == (True, 0)
    state = tat(conn, "k")
    allowed, remaining, _, retry_after = take(conn, "k", 2, 2)
    assert (allowed, remaining, retry_after) == (False, 0, 1)
    assert tat(conn, "k") == state, "a refused take changes nothing"
    time.sleep(1.05)
    assert take(conn, "k", 2, 2)[0] is True
    assert take(conn, "k", 2, 2)[0] is False


def test_remaining_and_reset_describe_the_quota(conn: psycopg.Connection) -> None:
    allowed, remaining, reset, _ = take(conn, "q", 20, 60)
    assert (allowed, remaining) == (True, 19)
    assert reset == 3  # one 60/20 s interval spent
    for _ in range(18):
        take(conn, "q", 20, 60)
    allowed, remaining, reset, _ = take(conn, "q", 20, 60)
    assert (allowed, remaining) == (True, 0)
    assert 59 <= reset <= 60
    allowed, _, _, retry_after = take(conn, "q", 20, 60)
    assert not allowed
    assert 2 <= retry_after <= 3


def test_keys_are_independent(conn: psycopg.Connection) -> None:
    assert take(conn, "a", 1, 60)[0] is True
    assert take(conn, "a", 1, 60)[0] is False
    assert take(conn, "b", 1, 60)[0] is True


def test_concurrent_takes_never_exceed_the_quota(db_url: str) -> None:
    """30 connections take from one key of 20 at once: exactly 20 succeed."""
    start = threading.Barrier(30)

    def one(_: int) -> bool:
        with psycopg.connect(db_url, autocommit=True) as c:
            start.wait(timeout=20)
            return take(c, "shared", 20, 60)[0]

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        results = list(pool.map(one, range(30)))
    assert results.count(True) == 20


def test_peek_reads_without_taking(conn: psycopg.Connection) -> None:
    peek = "select * from private.rate_limit_peek(%s, %s, %s)"
    assert conn.execute(peek, ("p", 5, 60)).fetchone() == (5, 0)
    take(conn, "p", 5, 60)
    take(conn, "p", 5, 60)
    assert conn.execute(peek, ("p", 5, 60)).fetchone() == (3, 24)
    assert conn.execute(peek, ("p", 5, 60)).fetchone() == (3, 24)


def test_stale_keys_are_pruned_by_the_takes(conn: psycopg.Connection) -> None:
    conn.execute(
        "insert into private.rate_limits (key, tat)"
        " select 'stale:' || i, now() - interval '1 hour' from generate_series(1, 300) i"
    )
    for _ in range(1000):
        take(conn, "busy", 100_000, 60)
    left = conn.execute(
        "select count(*) from private.rate_limits where key like 'stale:%%'"
    ).fetchone()
    assert left == (0,)
    assert tat(conn, "busy") is not None


def test_invalid_limits_are_refused(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        take(conn, "x", 0, 60)


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_api_roles_cannot_take_or_peek(conn: psycopg.Connection, role: str) -> None:
    for function in (
        "rate_limit_take(text, integer, integer)",
        "rate_limit_peek(text, integer, integer)",
        "rate_limit_check(text, text, integer, integer)",
    ):
        row = conn.execute(
            "select has_function_privilege(%s, %s, 'execute')", (role, f"private.{function}")
        ).fetchone()
        assert row == (False,), function
    row = conn.execute(
        "select has_table_privilege(%s, 'private.rate_limits', 'select')", (role,)
    ).fetchone()
    assert row == (False,)
