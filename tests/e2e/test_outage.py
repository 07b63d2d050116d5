"""A database outage under load, against the real processes (docs/operations.md#database-outages).

Twenty conversations stream replies while PostgreSQL goes away and comes back, once for a fast
restart (`pg_ctl restart -m fast`, well under a second) and once stopped for 10 s; no process is
restarted. Meanwhile every answer the API gives is a success or a 503 problem+json with
Retry-After within DB_UNAVAILABLE_TIMEOUT_SECONDS (never a 500, never a hang), /readyz is 503
while the database is away, and every stream either goes on or ends with `stream.closing`.
Afterwards every message accepted before, during or after completes exactly once (one completed
reply each, nothing left queued or running), each client's text equals the stored reply, and both
LISTEN connections are back.

The outage is made on a cluster of the module's own (started and migrated with the test script's
helpers), never on the suite's shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from agentmarket.core import paths
from tests.conftest import Server
from tests.e2e.conftest import Stack, deploy
from tests.e2e.resume import Log, Reply, exchange
from tests.procs import free_port

pytestmark = [pytest.mark.db, pytest.mark.e2e]

LIB = paths.project_root() / "scripts" / "lib.sh"
TEMPLATE = "agentmarket_template"
CONVERSATIONS = 20
DB_TIMEOUT = 5.0  # DB_UNAVAILABLE_TIMEOUT_SECONDS (the default)
MARGIN = 1.5  # a 503's own round trip, on a machine shared with the rest of the suite
# A reply of about 2.5 s (60 words at 25 tokens a second): many are mid-stream at any moment.
TEXT = "[[tps:25]] [[long:60]]"


@dataclass
class Cluster:
    """A throwaway PostgreSQL of this module's own, driven through scripts/lib.sh."""

    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "pg"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.port}/postgres"

    def _lib(self, script: str, *args: str) -> None:
        subprocess.run(
            ["bash", "-c", f'source "{LIB}"; {script}', "lib", *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> None:
        self._lib(
            'pg_start "$1" "$2" "$3" fsync=off synchronous_commit=off full_page_writes=off'
            " max_connections=200",
            str(self.data),
            str(self.port),
            str(self.base / "run"),
        )

    def stop(self) -> None:
        self._lib('pg_stop "$1"', str(self.data))

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every connection is cut, the server is back at once."""
        self._lib(
            'pg_run "$(pg_bindir)/pg_ctl" -D "$1" -l "$1/server.log" -m fast -w restart',
            str(self.data),
        )


def _agentmarket(db_url: str, *args: str) -> None:
    env = {**os.environ, "APP_ENV": "test", "DATABASE_URL": db_url}
    subprocess.run(
        [sys.executable, "-m", "agentmarket", *args], env=env, check=True, stdout=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="agentmarket-outage."))
    base.chmod(0o755)  # the server runs as postgres when we are root
    cluster = Cluster(base, free_port())
    try:
        cluster.start()
        # The template, as ./scripts/test builds the suite's: migrated and seeded.
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute(f"create database {TEMPLATE} template template0")
        template_url = f"postgresql://postgres:postgres@127.0.0.1:{cluster.port}/{TEMPLATE}"
        _agentmarket(template_url, "migrate", "up")
        _agentmarket(template_url, "seed")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(cluster: Cluster) -> Server:
    """This module's stack runs on its own cluster (the stack fixture takes its database from
    here)."""
    return Server(admin_url=cluster.admin_url, template=TEMPLATE)


class Traffic:
    """`CONVERSATIONS` conversations, each sending one streamed message after another until
    stopped."""

    def __init__(self, stack: Stack, tag: str) -> None:
        self.stack = stack
        self.tag = tag
        self.log = Log()
        self.replies: list[Reply] = []
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._converse, args=(n,), name=f"conversation-{n}")
            for n in range(CONVERSATIONS)
        ]
        self._lock = threading.Lock()

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(180)
        assert not any(t.is_alive() for t in self.threads), "a conversation hung"

    def _converse(self, n: int) -> None:
        with self.stack.client(f"outage-{self.tag}-{n}@example.com") as client:
            client.timeout = httpx.Timeout(60)
            deployment = deploy(client)
            conversation: str | None = None
            i = 0
            while not self.stopping.is_set():
                try:
                    reply = exchange(
                        client,
                        deployment,
                        f"{self.tag} c{n} m{i} {TEXT}",
                        self.log,
                        conversation_id=conversation,
                    )
                except (httpx.HTTPError, AssertionError):
                    return  # recorded in the log
                conversation = reply.conversation_id
                with self._lock:
                    self.replies.append(reply)
                i += 1

    def wait_for(self, count: int, seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while len(self.replies) < count and time.monotonic() < end:
            time.sleep(0.1)


def probe(
    stack: Stack, log: Log, client: httpx.Client, reply: Reply, *, send: bool = False
) -> list[int]:
    """The statuses of a /readyz, of a read of a message and (`send`) of a new message sent to
    the reply's conversation; a 503 is recorded with how long it took, and /readyz (its own
    report, not a problem) must answer as quickly."""
    started = time.monotonic()
    ready = httpx.get(f"{stack.api}/readyz", timeout=30)
    if time.monotonic() - started > DB_TIMEOUT + MARGIN:
        log.error(f"/readyz took {time.monotonic() - started:.1f}s")
    statuses = [ready.status_code]
    requests: list[tuple[str, str, dict[str, str] | None]] = [
        ("GET", f"/api/messages/{reply.reply_id}", None)
    ]
    if send:
        path = f"/api/messages/{reply.reply_id}"
        message = client.get(path).json() if ready.status_code == 200 else None
        del message
        requests.append(
            (
                "POST",
                f"/api/agents/{reply.deployment}/chat",
                {"message": "probe", "conversation_id": reply.conversation_id, "mode": "async"},
            )
        )
    for method, path, body in requests:
        started = time.monotonic()
        response = client.request(method, path, json=body, timeout=30)
        if response.status_code == 503:
            log.add_503(response, path, time.monotonic() - started)
        statuses.append(response.status_code)
    return statuses


def run_outage(
    stack: Stack, tag: str, outage: Callable[[Log, Callable[..., list[int]]], None]
) -> Traffic:
    pids = [p.popen.pid for p in stack.processes]
    with Traffic(stack, tag) as traffic:
        traffic.wait_for(CONVERSATIONS)  # every conversation has had a reply; more are streaming
        first = traffic.replies[0]
        # The reply's owner reads it (the client made for the first conversation's user).
        owner = f"outage-{tag}-{_conversation(first)}"
        with stack.client(f"{owner}@example.com") as client:
            outage(traffic.log, lambda **kw: probe(stack, traffic.log, client, first, **kw))
        accepted = len(traffic.replies)
        traffic.wait_for(accepted + 2 * CONVERSATIONS, seconds=90)  # and after it, as much again
    assert [p.popen.pid for p in stack.processes] == pids
    assert all(p.popen.poll() is None for p in stack.processes), "a process exited"
    return traffic


def _conversation(reply: Reply) -> int:
    """Which conversation thread sent `reply` (its text names it: "<tag> c<n> m<i> ...")."""
    return int(reply.sent.split()[1][1:])


def check(stack: Stack, traffic: Traffic) -> None:
    log = traffic.log
    slowest = max((u.seconds for u in log.unavailable), default=0.0)
    print(
        f"\n{traffic.tag}: {len(traffic.replies)} replies, {len(log.unavailable)} answers 503"
        f" (slowest {slowest:.2f}s), {len(log.closings)} streams closed and resumed,"
        f" {sum(1 for r in traffic.replies if r.resumes)} replies resumed"
    )
    assert log.errors == []
    assert traffic.replies
    for unavailable in log.unavailable:
        assert unavailable.problem and unavailable.retry_after, unavailable
        assert unavailable.seconds <= DB_TIMEOUT + MARGIN, unavailable
    for closing in log.closings:
        assert closing["reason"] in ("database_unavailable", "shutdown") and closing["retry_ms"] > 0
    for reply in traffic.replies:
        assert reply.final["status"] == "completed", reply.final
        assert reply.text == reply.final["content"], reply.reply_id
    user_ids = [r.user_message_id for r in traffic.replies]
    assert len(set(user_ids)) == len(user_ids)
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        unfinished = conn.execute(
            "select count(*) from private.chat_jobs where status in ('queued', 'running')"
        ).fetchone()
        assert unfinished == (0,)
        rows = conn.execute(
            """select u.id::text, count(a.id), count(a.id) filter (where a.status = 'completed'),
                      min(a.content)
                 from public.agent_messages u
                 left join public.agent_messages a on a.reply_to = u.id
                where u.role = 'user' and u.content like %s
                group by u.id""",
            (f"{traffic.tag} %",),
        ).fetchall()
    stored = {row[0]: row[1:] for row in rows}
    # Every message the clients sent was stored once (a send retried after a 503 is the same
    # message), and has exactly one reply, completed, with the text the client received.
    assert sorted(stored) == sorted(user_ids)
    for reply in traffic.replies:
        replies, completed, content = stored[reply.user_message_id]
        assert (replies, completed) == (1, 1), reply.user_message_id
        assert content == reply.text


def listening(stack: Stack) -> set[str]:
    with psycopg.connect(stack.db_url, autocommit=True) as conn:
        rows = conn.execute(
            "select application_name from pg_stat_activity"
            " where application_name like 'agentmarket-%%-listen' and datname = current_database()"
        ).fetchall()
    return {row[0] for row in rows}


def wait_listening(stack: Stack, seconds: float = 20) -> set[str]:
    end = time.monotonic() + seconds
    while True:
        names = listening(stack)
        if len(names) == 2 or time.monotonic() > end:
            return names
        time.sleep(0.2)


LISTENERS = {"agentmarket-api-listen", "agentmarket-worker-listen"}


def test_a_fast_restart_under_load_loses_nothing(stack: Stack, cluster: Cluster) -> None:
    after: list[list[int]] = []

    def outage(log: Log, probe_now: Callable[..., list[int]]) -> None:
        time.sleep(1)
        cluster.restart()
        # Right after the restart: pooled connections that idled through it are checked when
        # taken, so the first requests are answered (not 503 for each broken connection).
        after.extend(probe_now() for _ in range(8))

    traffic = run_outage(stack, "restart", outage)
    check(stack, traffic)
    statuses = [status for pair in after for status in pair]
    assert 500 not in statuses
    assert statuses == [200] * len(statuses), statuses
    assert wait_listening(stack) == LISTENERS


def test_a_ten_second_outage_under_load_loses_nothing(stack: Stack, cluster: Cluster) -> None:
    during: list[list[int]] = []

    def outage(log: Log, probe_now: Callable[..., list[int]]) -> None:
        time.sleep(1)
        cluster.stop()
        stopped = time.monotonic()
        while time.monotonic() - stopped < 10:
            during.append(probe_now(send=True))
        cluster.start()

    traffic = run_outage(stack, "stop", outage)
    check(stack, traffic)
    # /readyz and reads said 503 while the database was away; streams were told to come back.
    assert all(statuses == [503, 503, 503] for statuses in during), during
    assert during
    assert wait_listening(stack) == LISTENERS
    with httpx.Client(base_url=stack.api) as c:
        assert c.get("/readyz").status_code == 200
