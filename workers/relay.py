"""Relaying a reply's text as it streams (docs/architecture.md#worker).

The model's text reaches the stored message (and, through its NOTIFY, every follower) in batches:
the first piece at once (time to first token), then whenever `flush_interval` seconds have passed
since the last write or `flush_chars` characters are waiting; a batch longer than `flush_chars` is
written in pieces of that size. A reply is cut at `MAX_REPLY_CHARS`, the stored limit of a
message's text (agent_messages_content_length). A retried model call starts the text over.

`Relay` holds that state and nothing else: it writes through the injected `append` (the reply's
new length, or None when the lease is lost) and `reset` callables.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from agentmarket.core import metrics
from workers.store import JobLost

__all__ = ["MAX_REPLY_CHARS", "Relay"]

# The stored limit of a message's text (agent_messages_content_length): a longer reply is cut here.
MAX_REPLY_CHARS: Final = 200_000


class Relay:
    def __init__(
        self,
        append: Callable[[str], Awaitable[int | None]],
        reset: Callable[[], Awaitable[None]],
        *,
        started: float,
        flush_interval: float,
        flush_chars: int,
        max_chars: int = MAX_REPLY_CHARS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._append = append
        self._reset = reset
        self.started = started  # when the job started, on `clock`
        self.flush_interval = flush_interval
        self.flush_chars = flush_chars
        self.max_chars = max_chars
        self._clock = clock
        self._parts: list[str] = []
        self._pending: list[str] = []
        self._last_flush = clock()
        self.length = 0
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

    async def add(self, piece: str) -> bool:
        """Relay the next piece of text; False when the reply reached `max_chars` and was cut
        there (stop reading the model, then `flush`)."""
        if self.ttft_ms is None:
            self.ttft_ms = int((self._clock() - self.started) * 1000)
            metrics.CHAT_TTFT.observe(self.ttft_ms / 1000)
        if self.length + len(piece) > self.max_chars:
            # Cut cleanly at the stored limit; the reply is complete as stored.
            piece, self.truncated = piece[: self.max_chars - self.length], True
        self.length += len(piece)
        self._parts.append(piece)
        self._pending.append(piece)
        if self.truncated:
            return False
        if self._due():
            await self.flush()
        return True

    def _due(self) -> bool:
        return (
            len(self._parts) == 1
            or self._clock() - self._last_flush >= self.flush_interval
            or sum(map(len, self._pending)) >= self.flush_chars
        )

    async def flush(self) -> None:
        """Write what is waiting, in pieces of at most `flush_chars`; JobLost if the lease is."""
        chunk = "".join(self._pending)
        self._pending.clear()
        self._last_flush = self._clock()
        while chunk:
            piece, chunk = chunk[: self.flush_chars], chunk[self.flush_chars :]
            if await self._append(piece) is None:
                raise JobLost()

    async def restart(self) -> None:
        """The model call is retried: drop this attempt's text, here and in the stored reply."""
        self._parts.clear()
        self._pending.clear()
        self.length = 0
        self.ttft_ms = None
        await self._reset()
