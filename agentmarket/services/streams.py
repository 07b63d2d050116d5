"""Reply streams: one LISTEN connection per functions instance, fanned out to its clients.

Workers append each batch of text to the message and NOTIFY `CHAT_STREAM` in the same transaction
(payload keys: `agentmarket.db.channels.StreamKey`). The `StreamHub` holds the instance's single
session connection (API_DATABASE_DIRECT_URL, the functions' own login: a transaction pooler would
drop notifications) and hands each notification to the subscribers of that message. `follow` turns
a subscription plus the message's stored state into SSE-ready events with resumable ids
`"<generation>.<offset>"`: subscribe first, then read the stored text, so nothing committed after
the read can be missed and nothing before it is sent twice (docs/architecture.md#stream-protocol).

When the instance shuts down (`StreamHub.shutdown`) every follower ends with a `closing` event
(the client resumes elsewhere with Last-Event-ID) instead of holding the shutdown open.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson
import structlog

from agentmarket.db.channels import CHAT_STREAM, StreamKey
from agentmarket.db.listen import Listener

__all__ = [
    "FINISHED",
    "Event",
    "Notice",
    "StreamHub",
    "StreamState",
    "Subscription",
    "follow",
    "parse_event_id",
]

log = structlog.get_logger("agentmarket.streaming")


@dataclass(frozen=True)
class Notice:
    """One notification about a message (or `resync` after the hub reconnected, or `closing`
    when the instance shuts down: `text` is the reason, `retry_ms` when to come back)."""

    kind: Literal["delta", "reset", "done", "resync", "closing"]
    generation: int = 0
    offset: int = 0
    text: str = ""
    status: str | None = None
    retry_ms: int = 0


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Notice] = asyncio.Queue()

    async def next(self, wait: float) -> Notice | None:
        """The next notice, or None after `wait` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), wait)
        except TimeoutError:
            return None


@dataclass(frozen=True)
class SubscriptionHold:
    hub: StreamHub
    message_id: uuid.UUID
    subscription: Subscription

    def release(self) -> None:
        self.hub.close(self.message_id, self.subscription)


class StreamHub:
    """The instance's LISTEN connection and its subscribers (message id → queues).

    `on_reconnect` runs when the LISTEN connection is back after a loss (the database is back:
    the app has its pool replace the connections that idled through the outage)."""

    def __init__(
        self,
        url: str,
        *,
        reconnect_delay: float = 0.5,
        connect_timeout: int = 5,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._subscribers: dict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self._on_reconnect = on_reconnect
        self._closing: Notice | None = None
        self._listener = Listener(
            url,
            [CHAT_STREAM],
            on_notify=lambda _, payload: self._dispatch(payload),
            on_connect=self._connected,
            application_name="agentmarket-api-listen",
            reconnect_delay=reconnect_delay,
            connect_timeout=connect_timeout,
        )

    async def start(self, *, wait: float = 10.0) -> None:
        await self._listener.start(wait=wait)

    async def aclose(self) -> None:
        await self._listener.aclose()

    def open(self, message_id: uuid.UUID) -> Subscription:
        """Start receiving the message's notices now (close it with `close`). Once the hub is
        shutting down, the first notice is `closing`."""
        subscription = Subscription()
        self._subscribers[message_id].add(subscription)
        if self._closing is not None:
            subscription.queue.put_nowait(self._closing)
        return subscription

    def shutdown(self, reason: str = "shutdown", *, retry_ms: int = 1000) -> None:
        """The instance is going away: every subscription, and every one opened from now on,
        gets a `closing` notice (a stream ends with `stream.closing`, a blocking wait answers
        with the reply as it stands). Idempotent."""
        if self._closing is not None:
            return
        self._closing = Notice(kind="closing", text=reason, retry_ms=retry_ms)
        log.info("stream.hub_closing", reason=reason, followers=self.followers)
        self._broadcast(self._closing)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    @property
    def followers(self) -> int:
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def hold(self, message_id: uuid.UUID, subscription: Subscription) -> SubscriptionHold:
        """The subscription as something a stream holds until it ends (`release()` closes it)."""
        return SubscriptionHold(self, message_id, subscription)

    def close(self, message_id: uuid.UUID, subscription: Subscription) -> None:
        """Stop a subscription (idempotent)."""
        subscribers = self._subscribers.get(message_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[message_id]

    @property
    def listening(self) -> bool:
        return self._listener.connected.is_set()

    def _dispatch(self, payload: str) -> None:
        try:
            data: dict[str, Any] = orjson.loads(payload)
            message_id = uuid.UUID(data[StreamKey.MESSAGE])
        except (ValueError, KeyError, TypeError):
            log.warning("stream.bad_notification")
            return
        subscribers = self._subscribers.get(message_id)
        if not subscribers:
            return
        notice = Notice(
            kind=data.get(StreamKey.EVENT, "delta"),
            generation=int(data.get(StreamKey.GENERATION, 0)),
            offset=int(data.get(StreamKey.OFFSET, 0)),
            text=str(data.get(StreamKey.TEXT, "")),
            status=data.get(StreamKey.STATUS),
        )
        for subscription in subscribers:
            subscription.queue.put_nowait(notice)

    def _connected(self, reconnected: bool) -> None:
        if not reconnected:
            return
        # Notifications may have been missed while reconnecting: every follower re-reads.
        self._broadcast(Notice(kind="resync"))
        if self._on_reconnect is not None:
            self._on_reconnect()

    def _broadcast(self, notice: Notice) -> None:
        for subscription in _all(self._subscribers.values()):
            subscription.queue.put_nowait(notice)


def _all(groups: Iterable[set[Subscription]]) -> list[Subscription]:
    return [subscription for subscribers in groups for subscription in subscribers]


# --- following one message -----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamState:
    status: str
    content: str
    generation: int


@dataclass(frozen=True)
class Event:
    """An SSE event for a client: `delta` text, a `reset` (start over), the final `done`, a
    `ping`, or `closing` (the stream ends before the reply does: `text` is the reason,
    `retry_ms` when to resume with Last-Event-ID)."""

    kind: Literal["delta", "reset", "done", "ping", "closing"]
    id: str | None = None
    text: str = ""
    retry_ms: int = 0


# The ids `follow` writes: "<generation>.<offset>", "f" after the final one. ASCII digits only
# (int() would also take " 5", "+5", "1_0" and Arabic-Indic digits), at most 18 of them.
_EVENT_ID = re.compile(r"([0-9]{1,18})\.([0-9]{1,18})f?", re.ASCII)


def parse_event_id(value: str | None) -> tuple[int, int] | None:
    """(generation, offset) from an id `follow` wrote; None for anything else."""
    match = _EVENT_ID.fullmatch(value or "")
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


FINISHED = ("completed", "failed", "cancelled")


async def follow(
    subscription: Subscription,
    read_state: Callable[[], Awaitable[StreamState]],
    *,
    last_event_id: str | None = None,
    ping_interval: float = 15.0,
    initial: StreamState | None = None,
    read_done: Callable[[], Awaitable[StreamState]] | None = None,
) -> AsyncIterator[Event]:
    """Events for one message until it finishes (or a `closing` notice ends it first),
    resuming after `last_event_id` if given.

    A `last_event_id` of this generation resumes right after it. One of an earlier generation (a
    retried reply) or one that is not a valid id here (malformed, or beyond the stored text)
    replays the whole text from offset 0 after a `reset` (except an earlier generation's "g.0",
    after which the client has nothing to drop).

    The caller subscribes before calling this, so the state read here plus the notifications that
    follow cover everything: deltas already in the stored text are trimmed by offset. `initial`
    is the state when the caller already knows it from a moment it was subscribed (a reply it
    just queued, subscribed before the queueing committed): nothing is read then. `read_done`
    reads the finished message's status and text when its `done` notice arrives (the notice
    names the generation), if the caller has a cheaper or more useful read than `read_state`.
    """
    state = initial if initial is not None else await read_state()
    cursor = _Cursor(state.generation)
    for event in cursor.resume(state, last_event_id):
        yield event
    while not cursor.finished:
        notice = await subscription.next(ping_interval)
        if notice is None:
            yield Event("ping")
            continue
        if notice.kind == "closing":
            yield Event("closing", text=notice.text, retry_ms=notice.retry_ms)
            return
        if notice.kind == "resync":
            events = cursor.resync(await read_state())
        elif notice.generation < cursor.generation:
            continue  # from an attempt that has been superseded
        else:
            if (reset := cursor.follow_generation(notice.generation)) is not None:
                yield reset
            events = await cursor.apply(notice, read_state, read_done or read_state)
        for event in events:
            yield event


class _Cursor:
    """What one client has been sent: the generation it follows and how much of its text."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.sent = 0  # characters of this generation's text sent
        self.finished = False  # the final `done` has been produced

    def resume(self, state: StreamState, last_event_id: str | None) -> list[Event]:
        """The first events: after the client's `last_event_id`, or from the start."""
        events: list[Event] = []
        if last_event_id:
            resume = parse_event_id(last_event_id)
            if (
                resume is not None
                and resume[0] == self.generation
                and resume[1] <= len(state.content)
            ):
                self.sent = resume[1]
            elif resume is None or resume[0] == self.generation or resume[1] > 0:
                # From an earlier attempt, or not an id of this stream at all (malformed, or past
                # the text): start over, and say so, so the client drops whatever it has shown.
                events.append(Event("reset", id=f"{self.generation}.0"))
        return self._catch_up(events, state)

    def resync(self, state: StreamState) -> list[Event]:
        """After notifications may have been lost: whatever the stored state adds."""
        events: list[Event] = []
        if state.generation != self.generation:
            self.generation, self.sent = state.generation, 0
            events.append(Event("reset", id=f"{self.generation}.0"))
        return self._catch_up(events, state)

    def follow_generation(self, generation: int) -> Event | None:
        """Move on to a newer generation (a retried reply); a `reset` if text was sent."""
        if generation <= self.generation:
            return None
        reset = Event("reset", id=f"{generation}.0") if self.sent > 0 else None
        self.generation, self.sent = generation, 0
        return reset

    async def apply(
        self,
        notice: Notice,
        read_state: Callable[[], Awaitable[StreamState]],
        read_done: Callable[[], Awaitable[StreamState]],
    ) -> list[Event]:
        """The events for a notice of the current generation."""
        if notice.kind == "reset":
            return []
        if notice.kind == "done":
            done = await read_done()
            # The finished text is the notice's generation (the last one: the job is over).
            events = self._stored(replace(done, generation=notice.generation))
            self.finished = True
            return [*events, self._done()]
        end = notice.offset + len(notice.text)
        if end <= self.sent:
            return []  # already in the stored text we sent
        if notice.offset > self.sent:
            # A gap can only mean a lost notification: take the stored text instead.
            return self._stored(await read_state())
        event = Event(
            "delta", id=f"{self.generation}.{end}", text=notice.text[self.sent - notice.offset :]
        )
        self.sent = end
        return [event]

    def _catch_up(self, events: list[Event], state: StreamState) -> list[Event]:
        """`events`, then the stored text not sent yet, then `done` if the message finished."""
        events.extend(self._stored(state))
        if state.status in FINISHED:
            self.finished = True
            events.append(self._done())
        return events

    def _stored(self, state: StreamState) -> list[Event]:
        """The stored text past what was sent, when it is of the generation followed."""
        if state.generation != self.generation or len(state.content) <= self.sent:
            return []
        event = Event(
            "delta", id=f"{self.generation}.{len(state.content)}", text=state.content[self.sent :]
        )
        self.sent = len(state.content)
        return [event]

    def _done(self) -> Event:
        return Event("done", id=f"{self.generation}.{self.sent}f")
