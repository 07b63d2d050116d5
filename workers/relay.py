"""Relaying the replies' text as it streams (docs/architecture.md#worker).

Each reply has a `Relay`: its text, the part not written yet, its time to first token and the cut
at `MAX_REPLY_CHARS` (the stored limit of a message's text, agent_messages_content_length). One
`Flusher` per worker process writes the pending text of *all* its active replies in one statement
per tick (`JobStore.append_batch`); that statement also publishes every piece to the followers.

The tick adapts to the load:

* a reply's first text waits at most `first_flush_delay` (short: the time to first token); a
  reply that finishes within it is never appended at all, its finish carries the whole text;
* later text waits at most the tick: `flush_interval`, stretched by `flush_interval_per_reply`
  for every active reply, up to `max_flush_interval`;
* one statement at a time, and the next one no sooner than `busy_factor` times the last one's
  duration after it ended (the relay keeps the database busy at most 1/busy_factor of the time).

While a reply streams slower than the worker reads it, its reader need not wake for every token:
the text waits for the tick anyway. `Relay.read_delay` says how long the reader may leave the
model's text in the socket (until just before the flush that would take it), so that one read
then takes a tick's worth of tokens at once (docs/architecture.md#worker).

A reply's pending text longer than `flush_chars` goes as several pieces (a NOTIFY's payload is
bounded). A retried model call starts the text over (`Relay.restart`, which waits for a statement
in flight). A reply found no longer ours raises `JobLost` at its next `add`. A statement that
fails puts its text back for the next tick: every piece names the offset it starts at, so a batch
sent twice is appended once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

import structlog

from agentmarket.core import metrics
from workers.config import WorkerConfig
from workers.store import JobLost, Piece

__all__ = ["MAX_REPLY_CHARS", "READ_AHEAD", "AppendsBatches", "Flusher", "Relay"]

log = structlog.get_logger("agentmarket.worker")

# The stored limit of a message's text (agent_messages_content_length): a longer reply is cut here.
MAX_REPLY_CHARS: Final = 200_000
# A paced reader wakes this long before the flush it reads for (`Relay.read_delay`).
READ_AHEAD: Final = 0.002


class AppendsBatches(Protocol):
    async def append_batch(self, pieces: Sequence[Piece]) -> Mapping[int, int | None]: ...


class Relay:
    """One reply's text; written by its `Flusher`. Create it with `Flusher.relay`."""

    def __init__(
        self,
        flusher: Flusher,
        job_id: int,
        reset: Callable[[], Awaitable[None]],
        *,
        started: float,
        max_chars: int,
        clock: Callable[[], float],
    ) -> None:
        self.flusher = flusher
        self.job_id = job_id
        self._reset = reset
        self.started = started  # when the job started, on `clock`
        self.max_chars = max_chars
        self._clock = clock
        self._parts: list[str] = []
        self._pending: list[str] = []
        self.due: float | None = None  # when the pending text is to be written
        self.length = 0  # this attempt's text so far
        self.written = 0  # how much of it is stored
        self.lost = False  # the store refused our text: the job is no longer ours
        self.ttft_ms: int | None = None  # time to the first piece of this attempt's text
        self.truncated = False  # cut at `max_chars`

    @property
    def text(self) -> str:
        """The reply so far (this attempt's)."""
        return "".join(self._parts)

    @property
    def pending(self) -> str:
        """Text not written yet."""
        return "".join(self._pending)

    def add(self, piece: str) -> bool:
        """Take the next piece of text; False when the reply reached `max_chars` and was cut there
        (stop reading the model). JobLost once the store refused this reply's text."""
        if self.lost:
            raise JobLost()
        now = self._clock()
        if self.ttft_ms is None:
            self.ttft_ms = int((now - self.started) * 1000)
            metrics.CHAT_TTFT.observe(self.ttft_ms / 1000)
        if self.length + len(piece) > self.max_chars:
            # Cut cleanly at the stored limit; the reply is complete as stored.
            piece, self.truncated = piece[: self.max_chars - self.length], True
        if piece:
            self.length += len(piece)
            self._parts.append(piece)
            self._pending.append(piece)
            if self.due is None:
                self.flusher.schedule(self, now)
        return not self.truncated

    def read_delay(self) -> float:
        """How long the reader may wait before reading the model on: until `READ_AHEAD` before the
        flush that will take this reply's pending text, so that nothing it reads then is later
        than it would have been. 0 before the reply's first write (a short reply should finish
        at once, its finish carrying the whole text) and when no text is pending."""
        if self.due is None or self.written == 0:
            return 0.0
        return max(0.0, self.flusher.next_flush(self.due) - READ_AHEAD - self._clock())

    def take(self) -> str:
        """The pending text, handed to a statement (which starts at offset `written`)."""
        text = "".join(self._pending)
        self._pending.clear()
        self.due = None
        return text

    def put_back(self, text: str, due: float) -> None:
        """A statement failed: its text is pending again, before anything added since."""
        self._pending.insert(0, text)
        self.due = due if self.due is None else min(self.due, due)

    async def restart(self) -> None:
        """The model call is retried: drop this attempt's text, here and in the stored reply
        (after any statement in flight, so none of the old text lands after the reset)."""
        async with self.flusher.lock:
            self._parts.clear()
            self._pending.clear()
            self.due = None
            self.length = self.written = 0
            self.ttft_ms = None
            await self._reset()

    def close(self) -> None:
        """The reply is over (its finish carries the whole text): nothing more is written."""
        self.flusher.discard(self)
        self._pending.clear()
        self.due = None


class Flusher:
    """Writes the pending text of every active reply of this process, one statement per tick.

    Its task runs while replies are active and ends with the last one (`aclose` ends it at once).
    """

    def __init__(
        self,
        store: AppendsBatches,
        *,
        first_flush_delay: float,
        flush_interval: float,
        flush_interval_per_reply: float,
        max_flush_interval: float,
        flush_chars: int,
        busy_factor: float = 4.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.store = store
        self.first_flush_delay = first_flush_delay
        self.flush_interval = flush_interval
        self.flush_interval_per_reply = flush_interval_per_reply
        self.max_flush_interval = max_flush_interval
        self.flush_chars = flush_chars
        self.busy_factor = busy_factor
        self._clock = clock
        self.lock = asyncio.Lock()  # held by a statement in flight
        self._relays: dict[int, Relay] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_allowed = -math.inf  # no statement before this (busy_factor)
        self._closed = False
        self.statements = 0  # batch statements sent

    @classmethod
    def from_config(
        cls,
        store: AppendsBatches,
        config: WorkerConfig,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> Flusher:
        """The flusher with the worker's tick settings (WorkerConfig)."""
        return cls(
            store,
            first_flush_delay=config.first_flush_delay,
            flush_interval=config.flush_interval,
            flush_interval_per_reply=config.flush_interval_per_reply,
            max_flush_interval=config.max_flush_interval,
            flush_chars=config.flush_chars,
            clock=clock,
        )

    def relay(
        self,
        job_id: int,
        reset: Callable[[], Awaitable[None]],
        *,
        started: float,
        max_chars: int = MAX_REPLY_CHARS,
    ) -> Relay:
        """A new reply's relay (close it when the reply ends)."""
        relay = Relay(self, job_id, reset, started=started, max_chars=max_chars, clock=self._clock)
        self._relays[job_id] = relay
        return relay

    def tick(self) -> float:
        """How long text may wait once a reply has written its first: longer with more replies."""
        stretched = self.flush_interval_per_reply * len(self._relays)
        return min(self.max_flush_interval, max(self.flush_interval, stretched))

    def next_flush(self, due: float) -> float:
        """When text due at `due` is written, at the earliest (the statements' spacing)."""
        return max(due, self._next_allowed)

    def schedule(self, relay: Relay, now: float) -> None:
        """`relay` has text waiting (it had none): when it is due, and start the task if idle."""
        delay = self.first_flush_delay if relay.written == 0 else self.tick()
        relay.due = now + delay
        self._wake.set()
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="relay-flusher")

    def discard(self, relay: Relay) -> None:
        if self._relays.get(relay.job_id) is relay:
            del self._relays[relay.job_id]
            self._wake.set()

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            while self._relays and not self._closed:
                due = min((r.due for r in self._relays.values() if r.due is not None), default=None)
                self._wake.clear()
                if due is None:
                    await self._wake.wait()
                    continue
                delay = max(due, self._next_allowed) - self._clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    continue  # look again: an earlier text may be due, or a reply gone
                await self.flush()
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def flush(self) -> None:
        """Write every active reply's pending text now, in one statement."""
        async with self.lock:
            batch = [(r, r.take()) for r in list(self._relays.values()) if r._pending]
            if not batch:
                return
            pieces = [
                Piece(relay.job_id, relay.written + start, text[start : start + self.flush_chars])
                for relay, text in batch
                for start in range(0, len(text), self.flush_chars)
            ]
            started = self._clock()
            try:
                lengths = await self.store.append_batch(pieces)
            except Exception as exc:
                # Nothing was written, or all of it was (offsets keep a second try from
                # appending twice): try again next tick.
                log.warning("relay.flush_failed", error=type(exc).__name__, replies=len(batch))
                retry = self._clock() + self.tick()
                for relay, text in batch:
                    relay.put_back(text, retry)
                self._next_allowed = retry
                return
            ended = self._clock()
            self.statements += 1
            self._next_allowed = ended + self.busy_factor * (ended - started)
            for relay, _ in batch:
                if self._relays.get(relay.job_id) is not relay:
                    continue  # finished meanwhile: its finish wrote the whole text
                length = lengths.get(relay.job_id)
                if length is None:
                    relay.lost = True
                else:
                    relay.written = length
