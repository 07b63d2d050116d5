"""The relay's batching policy, truncation and restarts (no database: injected writes)."""

from __future__ import annotations

import pytest

from workers.relay import MAX_REPLY_CHARS, Relay
from workers.store import JobLost


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Writes:
    """The stored reply: what `append` received, batch by batch."""

    def __init__(self, *, owned: bool = True) -> None:
        self.batches: list[str] = []
        self.resets = 0
        self.owned = owned

    async def append(self, delta: str) -> int | None:
        if not self.owned:
            return None
        self.batches.append(delta)
        return sum(map(len, self.batches))

    async def reset(self) -> None:
        self.resets += 1
        self.batches.clear()


def relay(
    writes: Writes, clock: Clock, *, flush_chars: int = 10, max_chars: int = MAX_REPLY_CHARS
) -> Relay:
    return Relay(
        writes.append,
        writes.reset,
        started=clock.now - 0.25,
        flush_interval=0.1,
        flush_chars=flush_chars,
        max_chars=max_chars,
        clock=clock,
    )


async def test_the_first_piece_is_written_at_once_and_sets_the_time_to_first_token() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock)

    assert await r.add("Hel") is True

    assert writes.batches == ["Hel"]
    assert r.ttft_ms == 250
    assert r.pending == ""


async def test_later_pieces_wait_for_the_flush_interval() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock)
    await r.add("a")
    clock.now += 0.05
    await r.add("b")
    await r.add("c")
    assert writes.batches == ["a"]
    assert r.pending == "bc"

    clock.now += 0.06  # over 0.1 s since the last write
    await r.add("d")

    assert writes.batches == ["a", "bcd"]
    assert r.text == "abcd"
    assert r.ttft_ms == 250  # only the first piece counts


async def test_pending_text_reaching_flush_chars_is_written_at_once() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock, flush_chars=5)
    await r.add("x")
    await r.add("1234")
    assert writes.batches == ["x"]

    await r.add("5")  # 5 characters waiting

    assert writes.batches == ["x", "12345"]


async def test_a_long_batch_is_written_in_pieces_of_flush_chars() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock, flush_chars=4)

    await r.add("abcdefghij")

    assert writes.batches == ["abcd", "efgh", "ij"]
    assert r.length == 10


async def test_flush_writes_what_is_left() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock)
    await r.add("a")
    await r.add("b")

    await r.flush()
    await r.flush()  # nothing left: no empty write

    assert writes.batches == ["a", "b"]


async def test_the_reply_is_cut_at_the_limit() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock, max_chars=8)
    assert await r.add("12345") is True

    assert await r.add("67890") is False  # full: stop reading the model

    assert r.truncated is True
    assert r.text == "12345678"
    assert writes.batches == ["12345"]  # the cut piece waits for the final flush
    await r.flush()
    assert "".join(writes.batches) == "12345678"


def test_the_limit_is_the_stored_one() -> None:
    assert MAX_REPLY_CHARS == 200_000


async def test_a_retry_starts_the_text_over() -> None:
    writes, clock = Writes(), Clock()
    r = relay(writes, clock)
    await r.add("partial")
    await r.add(" more")
    clock.now += 1.0

    await r.restart()

    assert writes.resets == 1
    assert (r.text, r.pending, r.length, r.ttft_ms) == ("", "", 0, None)
    await r.add("again")  # the first piece of the new attempt is written at once
    assert writes.batches == ["again"]
    assert r.ttft_ms == 1250


async def test_a_lost_lease_stops_the_relay() -> None:
    writes, clock = Writes(owned=False), Clock()
    r = relay(writes, clock)

    with pytest.raises(JobLost):
        await r.add("a")
