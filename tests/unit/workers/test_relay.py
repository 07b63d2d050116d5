"""The relay: one flush statement for all active replies, its adaptive tick, truncation, restarts
and lost leases (no database: a fake store; `Flusher.flush` is called by hand where the tick does
not matter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import pytest

from tests.unit.workers.fakes import FakeStore
from workers.relay import MAX_REPLY_CHARS, READ_AHEAD, AppendsBatches, Flusher, Relay
from workers.store import JobLost, Piece


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Store:
    """Stored text per job; `lost` jobs are refused; `fail` makes the next statement fail."""

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.statements: list[list[Piece]] = []
        self.lost: set[int] = set()
        self.fail = False
        self.resets: list[int] = []

    async def append_batch(self, pieces: Sequence[Piece]) -> Mapping[int, int | None]:
        if self.fail:
            self.fail = False
            raise ConnectionError("down")
        self.statements.append(list(pieces))
        lengths: dict[int, int | None] = {}
        for piece in pieces:
            if piece.job_id in self.lost:
                lengths[piece.job_id] = None
                continue
            stored = self.texts.get(piece.job_id, "")
            assert piece.offset == len(stored), "a gap or a repeat"
            self.texts[piece.job_id] = stored + piece.text
            lengths[piece.job_id] = len(self.texts[piece.job_id])
        return lengths

    def reset(self, job_id: int) -> Callable[[], Awaitable[None]]:
        async def reset() -> None:
            self.resets.append(job_id)
            self.texts[job_id] = ""

        return reset


# Long enough that the flusher's own task never writes during a test that flushes by hand.
SLOW = {
    "first_flush_delay": 10.0,
    "flush_interval": 20.0,
    "flush_interval_per_reply": 2.0,
    "max_flush_interval": 50.0,
    "flush_chars": 10,
}


@pytest.fixture
async def flushers() -> AsyncIterator[list[Flusher]]:
    """Every flusher a test makes, closed at its end (their tasks cancelled)."""
    made: list[Flusher] = []
    yield made
    for f in made:
        await f.aclose()


def make_flusher(
    made: list[Flusher], store: AppendsBatches, clock: Clock | None = None, **overrides: float
) -> Flusher:
    settings = {**SLOW, **overrides}
    f = Flusher(
        store,
        first_flush_delay=settings["first_flush_delay"],
        flush_interval=settings["flush_interval"],
        flush_interval_per_reply=settings["flush_interval_per_reply"],
        max_flush_interval=settings["max_flush_interval"],
        flush_chars=int(settings["flush_chars"]),
        clock=clock or time.perf_counter,
    )
    made.append(f)
    return f


def relay(f: Flusher, store: Store, job_id: int, **kwargs: int) -> Relay:
    return f.relay(job_id, store.reset(job_id), started=f._clock() - 0.25, **kwargs)


async def test_one_statement_writes_the_pending_text_of_every_reply(
    flushers: list[Flusher],
) -> None:
    store = Store()
    f = make_flusher(flushers, store, Clock())
    replies = [relay(f, store, job) for job in range(1, 51)]
    for r in replies:
        r.add(f"r{r.job_id}-")
        r.add("a")

    await f.flush()

    assert len(store.statements) == 1
    assert {p.job_id for p in store.statements[0]} == set(range(1, 51))
    assert store.texts[7] == "r7-a"
    assert all(r.written == len(r.text) and r.pending == "" for r in replies)
    await f.flush()  # nothing pending: no statement
    assert len(store.statements) == 1


async def test_n_concurrent_replies_cost_one_statement_per_tick_not_one_per_reply(
    flushers: list[Flusher],
) -> None:
    """The flusher's own task: 20 replies streaming 30 pieces each, with ticks in between."""
    store = Store()
    f = make_flusher(
        flushers,
        store,
        first_flush_delay=0.001,
        flush_interval=0.002,
        flush_interval_per_reply=0.0001,
        max_flush_interval=0.01,
    )
    replies = [relay(f, store, job) for job in range(1, 21)]
    for _ in range(30):
        for r in replies:
            r.add("tok ")
        await asyncio.sleep(0.003)
    for _ in range(10_000):
        if not any(r.pending for r in replies):
            break
        await asyncio.sleep(0.003)

    assert all(store.texts[r.job_id] == "tok " * 30 for r in replies)  # no gap, no repeat
    assert f.statements == len(store.statements)
    # At most one statement per round of pieces (the text of all 20 replies together), not one
    # per reply and round (600).
    assert 1 <= f.statements <= 30
    task = f._task
    for r in replies:
        r.close()
    if task is not None:
        await asyncio.wait_for(task, 10)  # the task ends with the last reply
    assert f._task is None


async def test_a_first_piece_is_due_after_the_short_first_delay_later_ones_after_the_tick(
    flushers: list[Flusher],
) -> None:
    store, clock = Store(), Clock()
    f = make_flusher(flushers, store, clock)
    r = relay(f, store, 1)

    r.add("a")
    assert r.due == clock.now + 10
    r.add("b")  # already waiting: still due at the same time
    assert r.due == clock.now + 10
    await f.flush()
    r.add("c")

    assert r.due == clock.now + 20


async def test_the_tick_stretches_with_the_active_replies_up_to_its_bound(
    flushers: list[Flusher],
) -> None:
    store = Store()
    f = make_flusher(flushers, store, Clock())
    assert f.tick() == 20
    replies = [relay(f, store, job) for job in range(1, 16)]
    assert f.tick() == 30
    replies += [relay(f, store, job) for job in range(16, 101)]
    assert f.tick() == 50
    for r in replies:
        r.close()
    assert f.tick() == 20


async def test_after_a_slow_statement_the_next_waits_busy_factor_times_as_long(
    flushers: list[Flusher],
) -> None:
    clock = Clock()

    class Slow(Store):
        async def append_batch(self, pieces: Sequence[Piece]) -> Mapping[int, int | None]:
            clock.now += 0.05
            return await super().append_batch(pieces)

    store = Slow()
    f = make_flusher(flushers, store, clock)
    r = relay(f, store, 1)
    r.add("a")
    await f.flush()

    assert f._next_allowed == pytest.approx(clock.now + 4 * 0.05)


async def test_long_pending_text_goes_in_pieces_of_flush_chars_with_their_offsets(
    flushers: list[Flusher],
) -> None:
    store = Store()
    f = make_flusher(flushers, store, Clock(), flush_chars=4)
    r = relay(f, store, 1)
    r.add("ab")
    await f.flush()

    r.add("cdefghij")
    await f.flush()

    assert [(p.offset, p.text) for p in store.statements[1]] == [(2, "cdef"), (6, "ghij")]
    assert store.texts[1] == "abcdefghij"


async def test_a_failed_statement_puts_the_text_back_for_the_next_tick(
    flushers: list[Flusher],
) -> None:
    store, clock = Store(), Clock()
    f = make_flusher(flushers, store, clock)
    r = relay(f, store, 1)
    r.add("ab")
    store.fail = True

    await f.flush()
    r.add("c")
    assert (r.pending, r.written) == ("abc", 0)
    assert r.due == clock.now + 20
    await f.flush()

    assert store.texts[1] == "abc"


async def test_a_reply_refused_by_the_store_raises_job_lost_at_its_next_piece(
    flushers: list[Flusher],
) -> None:
    store = Store()
    store.lost.add(1)
    f = make_flusher(flushers, store, Clock())
    lost, kept = relay(f, store, 1), relay(f, store, 2)
    lost.add("a")
    kept.add("b")

    await f.flush()

    assert lost.lost and not kept.lost
    with pytest.raises(JobLost):
        lost.add("more")
    assert kept.add("more") is True


async def test_a_closed_reply_is_not_written(flushers: list[Flusher]) -> None:
    store = Store()
    f = make_flusher(flushers, store, Clock())
    r = relay(f, store, 1)
    r.add("never written: the finish carries it")

    r.close()
    await f.flush()

    assert store.statements == []
    assert r.text == "never written: the finish carries it"


async def test_the_reply_is_cut_at_the_limit(flushers: list[Flusher]) -> None:
    store = Store()
    f = make_flusher(flushers, store, Clock())
    r = relay(f, store, 1, max_chars=8)
    assert r.add("12345") is True

    assert r.add("67890") is False  # full: stop reading the model

    assert r.truncated is True
    assert r.text == "12345678"
    await f.flush()
    assert store.texts[1] == "12345678"


def test_the_limit_is_the_stored_one() -> None:
    assert MAX_REPLY_CHARS == 200_000


async def test_a_retry_starts_the_text_over_after_the_statement_in_flight(
    flushers: list[Flusher],
) -> None:
    clock = Clock()
    store = Store()
    release = asyncio.Event()

    class Held(Store):
        async def append_batch(self, pieces: Sequence[Piece]) -> Mapping[int, int | None]:
            await release.wait()
            return await store.append_batch(pieces)

    f = make_flusher(flushers, Held(), clock)
    r = relay(f, store, 1)
    r.add("partial")
    in_flight = asyncio.create_task(f.flush())
    await asyncio.sleep(0)
    restart = asyncio.create_task(r.restart())
    await asyncio.sleep(0)
    assert store.resets == []  # waits for the statement carrying the old text

    release.set()
    await asyncio.gather(in_flight, restart)

    assert store.resets == [1] and store.texts[1] == ""
    assert (r.text, r.pending, r.length, r.written, r.ttft_ms) == ("", "", 0, 0, None)
    clock.now += 1.0
    r.add("again")
    assert r.ttft_ms == 1250
    assert r.due == clock.now + 10  # a first piece again
    await f.flush()
    assert store.texts[1] == "again"


async def test_the_first_piece_sets_the_time_to_first_token(flushers: list[Flusher]) -> None:
    store, clock = Store(), Clock()
    f = make_flusher(flushers, store, clock)
    r = relay(f, store, 1)
    clock.now += 0.25

    r.add("Hel")

    assert r.ttft_ms == 500
    assert r.pending == "Hel"


async def test_the_job_store_fake_speaks_the_same_protocol(flushers: list[Flusher]) -> None:
    fake = FakeStore()
    f = make_flusher(flushers, Store(), Clock())
    f.store = fake
    r = f.relay(7, lambda: fake.reset(7), started=0.0)
    r.add("x")
    await f.flush()
    assert fake.stored == "x"


async def test_a_reader_may_wait_until_just_before_the_flush_that_takes_its_text(
    flushers: list[Flusher],
) -> None:
    """`read_delay`: how long a paced reader may leave tokens in the socket. Never past the flush
    that would have taken them (minus READ_AHEAD), never before the reply's first write, and
    never when no text is pending."""
    store = Store()
    clock = Clock()
    f = make_flusher(flushers, store, clock)
    r = relay(f, store, 1)
    assert r.read_delay() == 0.0  # nothing pending

    r.add("first")
    assert r.due == clock.now + SLOW["first_flush_delay"]
    assert r.read_delay() == 0.0  # before the first write: a short reply ends at once
    await f.flush()
    assert r.written == 5 and r.read_delay() == 0.0  # written, nothing pending

    clock.now += 1.0
    r.add(" more")
    tick = f.tick()
    assert r.due == clock.now + tick
    assert r.read_delay() == pytest.approx(tick - READ_AHEAD)
    clock.now += tick - 0.001  # past the read-ahead point: read now
    assert r.read_delay() == 0.0

    # The statements' spacing (busy_factor) puts the flush later: the reader may wait for it.
    f._next_allowed = r.due + 3.0
    assert r.read_delay() == pytest.approx(r.due + 3.0 - READ_AHEAD - clock.now)
