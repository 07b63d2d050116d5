"""A chat client that rides out outages and shutdowns the way docs/api.md tells clients to: a 503
is retried after its Retry-After (a send with the same client_message_id, so it is accepted once),
and a stream that ends with `stream.closing` is resumed with Last-Event-ID. It records what it
met, for the outage and shutdown tests to check."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.conftest import sse_events

SSE = {"Accept": "text/event-stream"}


@dataclass
class Unavailable:
    """One 503 answer: how long it took and whether it was a proper problem with Retry-After."""

    path: str
    seconds: float
    problem: bool
    retry_after: str | None


@dataclass
class Log:
    """What every client met (shared by threads)."""

    unavailable: list[Unavailable] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    closings: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_503(self, response: httpx.Response, path: str, seconds: float) -> float:
        """Record a 503; how long to wait before retrying (its Retry-After)."""
        retry_after = response.headers.get("retry-after")
        problem = response.headers.get("content-type", "").startswith("application/problem+json")
        with self.lock:
            self.unavailable.append(Unavailable(path, seconds, problem, retry_after))
        return float(retry_after) if retry_after else 1.0

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


@dataclass
class Reply:
    """One accepted exchange as the client saw it."""

    sent: str  # the message's text
    deployment: str
    user_message_id: str
    reply_id: str
    conversation_id: str
    text: str  # the deltas received, across resumes (a reset starts it over)
    final: dict[str, Any]  # the message the last event carried
    resumes: int


class Follow:
    """The state of following one reply across streams."""

    def __init__(self) -> None:
        self.reply_id: str | None = None
        self.user_message_id: str | None = None
        self.conversation_id: str | None = None
        self.last_id: str | None = None
        self.text = ""
        self.final: dict[str, Any] | None = None
        self.closing: dict[str, Any] | None = None
        self._reading: tuple[httpx.Response, Iterator[tuple[str | None, str, dict[str, Any]]]]
        self._reading = (httpx.Response(200), iter(()))

    def read(self, response: httpx.Response, *, until: Any = None) -> None:
        """Consume one stream until it ends (or `until(self)` is true after an event: a later
        call goes on where that one stopped)."""
        self.closing = None
        if self._reading[0] is not response:
            self._reading = (response, sse_events(response))
        for event_id, name, data in self._reading[1]:
            if name == "message.created":
                message = data["message"]
                self.conversation_id = message["conversation_id"]
                if message["role"] == "user":
                    self.user_message_id = message["id"]
                else:
                    self.reply_id = message["id"]
            elif name == "message.delta":
                self.text += str(data["delta"])
            elif name == "message.reset":
                self.text = ""
            elif name in ("message.completed", "message.failed"):
                self.final = data["message"]
            elif name == "stream.closing":
                self.closing = data
            if event_id is not None:
                self.last_id = event_id
            if self.final is not None or self.closing is not None:
                return
            if until is not None and until(self):
                return


def _send(client: httpx.Client, path: str, body: dict[str, Any], log: Log, follow: Follow) -> None:
    """POST a streamed send until it is accepted (503: wait, send the same again), then read."""
    while True:
        started = time.monotonic()
        with client.stream("POST", path, json=body, headers=SSE) as response:
            if response.status_code == 503:
                response.read()
                time.sleep(log.add_503(response, path, time.monotonic() - started))
                continue
            if response.status_code != 200:
                response.read()
                raise AssertionError(f"send answered {response.status_code}: {response.text}")
            follow.read(response)
            return


def resume(client: httpx.Client, log: Log, follow: Follow, *, until: Any = None) -> None:
    """Reattach to the reply's stream after the last event id seen, until it ends (503: wait,
    try again)."""
    path = f"/api/messages/{follow.reply_id}/stream"
    while True:
        started = time.monotonic()
        headers = {"Last-Event-ID": follow.last_id or "0.0"}
        with client.stream("GET", path, headers=headers) as response:
            if response.status_code == 503:
                response.read()
                time.sleep(log.add_503(response, path, time.monotonic() - started))
                continue
            if response.status_code != 200:
                response.read()
                raise AssertionError(f"resume answered {response.status_code}: {response.text}")
            follow.read(response, until=until)
            return


def exchange(
    client: httpx.Client,
    deployment: str,
    text: str,
    log: Log,
    *,
    conversation_id: str | None = None,
) -> Reply:
    """One message, streamed to its end whatever happens meanwhile."""
    body: dict[str, Any] = {"message": text, "client_message_id": uuid.uuid4().hex}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    follow = Follow()
    resumes = 0
    try:
        _send(client, f"/api/agents/{deployment}/chat", body, log, follow)
        while follow.final is None:
            if follow.closing is None:
                raise AssertionError(
                    f"the stream ended without a final event or stream.closing "
                    f"(reply {follow.reply_id}, last id {follow.last_id})"
                )
            with log.lock:
                log.closings.append(follow.closing)
            time.sleep(int(follow.closing["retry_ms"]) / 1000)
            resumes += 1
            resume(client, log, follow)
    except (httpx.HTTPError, AssertionError) as exc:
        log.error(f"{text}: {type(exc).__name__}: {exc}")
        raise
    assert follow.user_message_id and follow.reply_id and follow.conversation_id
    return Reply(
        text,
        deployment,
        follow.user_message_id,
        follow.reply_id,
        follow.conversation_id,
        follow.text,
        follow.final,
        resumes,
    )
