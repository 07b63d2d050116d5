"""`follow`: stored text + notifications → SSE events, resumable, without gaps or repeats."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

import pytest

from agentmarket.services.limits import held
from agentmarket.services.streams import (
    Event,
    Notice,
    StreamHub,
    StreamState,
    Subscription,
    follow,
    parse_event_id,
)

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


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("1.7", (1, 7)),
        ("0.0", (0, 0)),
        ("3.13f", (3, 13)),
        ("12.345", (12, 345)),
        (None, None),
        ("", None),
        ("1.-5", None),
        ("-1.5", None),
        ("1.+5", None),
        ("+1.5", None),
        (" 1.5", None),
        ("1.5 ", None),
        ("1. 5", None),
        ("1.5\n", None),
        ("1.2.3", None),
        ("1", None),
        ("1.", None),
        (".5", None),
        ("1.5ff", None),
        ("1.f", None),
        ("1.1_0", None),
        ("1.\u0661", None),  # ARABIC-INDIC DIGIT ONE: int() reads it, we do not
        ("\u0661.1", None),
        ("1.\uff15", None),  # FULLWIDTH DIGIT FIVE
        ("1.0x5", None),
        ("1.5e3", None),
        ("1." + "9" * 19, None),
        ("9" * 19 + ".1", None),
        ("abc", None),
    ],
)
def test_parse_event_id_takes_only_ids_the_stream_writes(
    value: str | None, parsed: tuple[int, int] | None
) -> None:
    assert parse_event_id(value) == parsed


@pytest.mark.parametrize(
    "last_event_id",
    [
        "1.-5",
        "1.-1",
        "-1.5",
        "1.50",
        "1.14",
        "1.99999999",
        "1." + "9" * 30,
        "abc",
        "1.2.3",
        " 1.5",
        "1.+5",
        "1.\u0661",
        "1.5ff",
    ],
)
async def test_an_unusable_event_id_replays_everything_after_a_reset(last_event_id: str) -> None:
    events = await collect(
        [StreamState("completed", "Hello, world!", 1)], [], last_event_id=last_event_id
    )
    assert [(e.kind, e.id, e.text) for e in events] == [
        ("reset", "1.0", ""),
        ("delta", "1.13", "Hello, world!"),
        ("done", "1.13f", ""),
    ]


@pytest.mark.parametrize(
    ("last_event_id", "expected"),
    [
        ("1.0", [("delta", "Hello, world!"), ("done", "")]),
        ("1.13", [("done", "")]),
        ("1.13f", [("done", "")]),
        ("1.12", [("delta", "!"), ("done", "")]),
        ("0.0", [("delta", "Hello, world!"), ("done", "")]),
        ("0.4", [("reset", ""), ("delta", "Hello, world!"), ("done", "")]),
        ("2.4", [("reset", ""), ("delta", "Hello, world!"), ("done", "")]),
        ("", [("delta", "Hello, world!"), ("done", "")]),
    ],
)
async def test_valid_event_ids_resume_as_before(
    last_event_id: str, expected: list[tuple[str, str]]
) -> None:
    events = await collect(
        [StreamState("completed", "Hello, world!", 1)], [], last_event_id=last_event_id
    )
    assert [(e.kind, e.text) for e in events] == expected


async def test_a_known_initial_state_is_not_read_back() -> None:
    """A reply subscribed before its send committed starts from the state the send left it in:
    the only read is the final one."""
    subscription = Subscription()
    for notice in (
        Notice("delta", 1, 0, "Hi "),
        Notice("delta", 1, 3, "there"),
        Notice("done", 1, status="completed"),
    ):
        subscription.queue.put_nowait(notice)
    reads: list[StreamState] = []

    async def read() -> StreamState:
        reads.append(StreamState("completed", "Hi there", 1))
        return reads[-1]

    events = [
        e
        async for e in follow(
            subscription, read, ping_interval=0.01, initial=StreamState("queued", "", 0)
        )
    ]
    assert text(events) == "Hi there"
    assert [e.id for e in events] == ["1.3", "1.8", "1.8f"]
    assert len(reads) == 1


async def test_a_held_subscription_is_closed_even_if_its_stream_never_starts() -> None:
    hub = StreamHub("postgresql://127.0.0.1:1/unused")
    message = uuid.uuid4()
    subscription = hub.open(message)
    hold = hub.hold(message, subscription)

    async def never() -> AsyncGenerator[int, None]:
        yield 1

    stream = held(never(), hold)
    await stream.aclose()
    assert hub._subscribers == {}
    hold.release()  # idempotent
    assert hub._subscribers == {}
