"""`follow`: stored text + notifications → SSE events, resumable, without gaps or repeats."""

from __future__ import annotations

import uuid

from agentmarket.streaming import Event, Notice, StreamState, Subscription, follow

ID = uuid.uuid4()


async def collect(
    states: list[StreamState], notices: list[Notice], last_event_id: str | None = None
) -> list[Event]:
    subscription = Subscription()
    for notice in notices:
        subscription.queue.put_nowait(notice)
    reads = iter(states)

    async def read() -> StreamState:
        return next(reads)

    return [
        e async for e in follow(subscription, read, last_event_id=last_event_id, ping_interval=0.01)
    ]


def text(events: list[Event]) -> str:
    out = ""
    for e in events:
        if e.kind == "reset":
            out = ""
        elif e.kind == "delta":
            out += e.text
    return out


async def test_stored_text_then_new_deltas_overlap_trimmed() -> None:
    events = await collect(
        [StreamState("running", "Hello", 1), StreamState("completed", "Hello, world!", 1)],
        [
            Notice("delta", 1, 0, "Hel"),  # already in the stored text
            Notice("delta", 1, 3, "lo, "),  # overlaps it
            Notice("delta", 1, 7, "world!"),
            Notice("done", 1, status="completed"),
        ],
    )
    assert [e.kind for e in events] == ["delta", "delta", "delta", "done"]
    assert text(events) == "Hello, world!"
    assert [e.id for e in events] == ["1.5", "1.7", "1.13", "1.13f"]


async def test_resuming_from_an_event_id_sends_only_the_rest() -> None:
    events = await collect([StreamState("completed", "Hello, world!", 1)], [], last_event_id="1.7")
    assert [(e.kind, e.text) for e in events] == [("delta", "world!"), ("done", "")]


async def test_a_new_generation_resets_the_text() -> None:
    events = await collect(
        [StreamState("running", "Par", 1), StreamState("completed", "Full", 2)],
        [Notice("reset", 2), Notice("delta", 2, 0, "Full"), Notice("done", 2, status="completed")],
    )
    assert [e.kind for e in events] == ["delta", "reset", "delta", "done"]
    assert text(events) == "Full"


async def test_resuming_across_a_restart_resets_first() -> None:
    events = await collect([StreamState("completed", "Again", 3)], [], last_event_id="2.40")
    assert [e.kind for e in events] == ["reset", "delta", "done"]
    assert text(events) == "Again"


async def test_a_gap_is_filled_from_the_stored_text() -> None:
    events = await collect(
        [
            StreamState("running", "", 1),
            StreamState("running", "abcdef", 1),
            StreamState("completed", "abcdef", 1),
        ],
        [Notice("delta", 1, 4, "ef"), Notice("done", 1, status="completed")],
    )
    assert text(events) == "abcdef"


async def test_idle_streams_ping_and_resync_reads_the_database() -> None:
    subscription = Subscription()
    states = iter([StreamState("running", "a", 1), StreamState("completed", "abc", 1)])

    async def read() -> StreamState:
        return next(states)

    events = []
    async for event in follow(subscription, read, ping_interval=0.01):
        events.append(event)
        if event.kind == "ping":
            subscription.queue.put_nowait(Notice("resync"))
    assert [e.kind for e in events] == ["delta", "ping", "delta", "done"]
    assert text(events) == "abc"
