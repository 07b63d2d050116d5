"""CPU time by process for the benchmarks, read from /proc (Linux), and Postgres statement counts.

A `CpuMeter` measures one phase: the CPU (utime + stime of /proc/<pid>/stat) that each named group
of processes spent between `start()` and `stop()`. A group is either OS processes (a process and
its descendants, e.g. `serve --workers N`'s children) or Postgres backends found by their
`application_name` in `pg_stat_activity` (the database must run on this machine for their
/proc entries to be readable). Backends are looked up again every `poll_seconds` while the phase
runs, so a connection a pool opens mid-phase is counted from its start, and one that closes keeps
its last reading.

`Statements` counts top-level statements with pg_stat_statements (reset at the start of each
phase), or says why it cannot.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

__all__ = ["CpuMeter", "Statements", "cpu_seconds", "descendants"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used so far (all its threads), None if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def _now_ticks() -> int:
    return int(float((_PROC / "uptime").read_text().split()[0]) * _TICKS)


def descendants(pid: int) -> list[int]:
    """The process and every process below it (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [pid], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class _Tracked:
    baseline: float
    last: float


@dataclass
class CpuMeter:
    """CPU seconds per group over one phase. `processes`: group -> root pids (descendants
    included); `backends`: group -> application_name values of Postgres connections; `db_url`:
    a login that may read pg_stat_activity's pids (any login can); groups in `without_children`
    count their own pids only (e.g. the measuring process, whose children are the servers)."""

    processes: Mapping[str, Sequence[int]]
    backends: Mapping[str, Sequence[str]] = field(default_factory=dict)
    db_url: str | None = None
    without_children: Sequence[str] = ()
    poll_seconds: float = 1.0
    _tracked: dict[tuple[str, int], _Tracked] = field(default_factory=dict, init=False)
    _started_ticks: int = field(default=0, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    backends_readable: bool = field(default=True, init=False)

    def found(self) -> dict[str, int]:
        """How many processes of each group the last phase measured (backends included)."""
        counts = {group: 0 for group in [*self.processes, *self.backends]}
        for group, _pid in self._tracked:
            counts[group] += 1
        return counts

    def _pids(self, conn: psycopg.Connection | None) -> list[tuple[str, int]]:
        pids = [
            (group, pid)
            for group, roots in self.processes.items()
            for root in roots
            for pid in ([root] if group in self.without_children else descendants(root))
        ]
        if conn is not None and self.backends:
            names = {name: group for group, apps in self.backends.items() for name in apps}
            rows = conn.execute(
                "select pid, application_name from pg_stat_activity"
                " where datname = current_database() and application_name = any(%s)",
                (list(names),),
            ).fetchall()
            pids += [(names[str(app)], int(pid)) for pid, app in rows]
        return pids

    def _sample(self, conn: psycopg.Connection | None) -> None:
        for key in self._pids(conn):
            now = cpu_seconds(key[1])
            if now is None:
                if key[0] in self.backends:
                    self.backends_readable = False
                continue
            tracked = self._tracked.get(key)
            if tracked is None:
                started = _start_ticks(key[1]) or 0
                # A process born during the phase counts from zero.
                baseline = 0.0 if started >= self._started_ticks else now
                self._tracked[key] = _Tracked(baseline, now)
            else:
                tracked.last = now

    def _poll(self) -> None:
        assert self.db_url is not None
        with psycopg.connect(
            self.db_url, autocommit=True, application_name="agentmarket-bench-observer"
        ) as conn:
            while not self._stop.wait(self.poll_seconds):
                self._sample(conn)

    def start(self) -> None:
        self._tracked.clear()
        self._started_ticks = _now_ticks()
        self._stop.clear()
        if self.db_url is not None and self.backends:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                self._sample(conn)
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        else:
            self._sample(None)

    def stop(self) -> dict[str, float]:
        """CPU seconds each group used since `start()` (every group named, 0.0 if none)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.db_url is not None and self.backends:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                self._sample(conn)
        else:
            self._sample(None)
        used = {group: 0.0 for group in [*self.processes, *self.backends]}
        for (group, _pid), tracked in self._tracked.items():
            used[group] += max(0.0, tracked.last - tracked.baseline)
        return used


# Top-level statements in this database by every login except the one measuring (the operator's).
_COUNT = (
    "select coalesce(sum(s.calls), 0)::bigint from pg_stat_statements s"
    " where s.dbid = (select oid from pg_database where datname = current_database())"
    " and s.userid <> (select oid from pg_roles where rolname = current_user)"
)


@dataclass
class Statements:
    """pg_stat_statements over one phase; `unavailable` says why it cannot count (then
    `count()` is None)."""

    db_url: str
    unavailable: str | None = None

    def reset(self) -> None:
        try:
            with psycopg.connect(self.db_url, autocommit=True) as conn:
                conn.execute("create extension if not exists pg_stat_statements")
                conn.execute("select pg_stat_statements_reset()")
            self.unavailable = None
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.unavailable = f"pg_stat_statements unavailable: {first}"

    def count(self) -> int | None:
        if self.unavailable is not None:
            return None
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            row = conn.execute(_COUNT).fetchone()
        return int(row[0]) if row else 0
