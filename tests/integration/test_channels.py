"""The NOTIFY channels and payload keys in agentmarket.db.channels are the ones the database's
functions actually use: one source of truth, checked against the migrated schema."""

from __future__ import annotations

import re

import psycopg
import pytest

from agentmarket.db import channels

pytestmark = pytest.mark.db

NOTIFY = re.compile(r"pg_notify\(\s*'([a-z_]+)'")


def _notifying_functions(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "select p.oid::regprocedure::text, p.prosrc from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'private') and p.prosrc like '%pg_notify%'"
    ).fetchall()
    return {name: source for name, source in rows}


def test_functions_notify_only_on_the_shared_channels(conn: psycopg.Connection) -> None:
    functions = _notifying_functions(conn)
    used = {channel for source in functions.values() for channel in NOTIFY.findall(source)}
    assert used == {channels.CHAT_JOBS, channels.CHAT_CANCEL, channels.CHAT_STREAM}
    # Every function that notifies does so through a literal channel we know.
    for name, source in functions.items():
        assert source.count("pg_notify(") == len(NOTIFY.findall(source)), name


def _arguments(text: str) -> list[str]:
    """The top-level, comma-separated arguments of a call's argument text."""
    args, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            args.append(current.strip())
            current = ""
            continue
        current += char
    return [*args, current.strip()]


def test_arguments_split_at_top_level_only() -> None:
    assert _arguments("'m', f(a, b), 'd', 'x,y'") == ["'m'", "f(a, b)", "'d'", "'x,y'"]


def test_stream_payloads_use_the_shared_keys(conn: psycopg.Connection) -> None:
    sent: set[str] = set()
    for source in _notifying_functions(conn).values():
        for start in [m.end() for m in re.finditer(r"json_build_object\(", source)]:
            depth, end = 1, start
            while depth:
                depth += {"(": 1, ")": -1}.get(source[end], 0)
                end += 1
            keys = _arguments(source[start : end - 1])[0::2]
            assert all(k.startswith("'") and k.endswith("'") for k in keys), keys
            keys = [k.strip("'") for k in keys]
            assert set(keys) <= channels.STREAM_KEYS, keys
            assert channels.StreamKey.MESSAGE in keys and channels.StreamKey.EVENT in keys
            sent.update(keys)
    # Every key the hub reads is one some function sends.
    assert sent == channels.STREAM_KEYS
