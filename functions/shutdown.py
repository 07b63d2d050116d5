"""Graceful shutdown (docs/operations.md#graceful-shutdown).

uvicorn handles SIGTERM/SIGINT itself: it stops accepting, waits for open connections to finish
(at most `timeout_graceful_shutdown`, which `agentmarket serve` sets to SHUTDOWN_GRACE_SECONDS),
then runs the app's lifespan shutdown. A reply stream would hold that wait open for as long as its
reply takes, and the lifespan shutdown comes too late to end it. So the app also hears the signal,
first: `on_stop_signal` chains a callback in front of the handler in place (uvicorn's), and the
app uses it to end every stream with `stream.closing` at once, so the client resumes on another
instance while ordinary requests finish within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["STOP_SIGNALS", "on_stop_signal"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """While inside, SIGTERM/SIGINT first schedule `callback` on the running event loop, then go
    on to the handler that was in place (the server's). Only in the main thread (where signal
    handlers live); elsewhere (an app run by a test client) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            # Nobody else handled it: do what the signal does by default.
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for stop in STOP_SIGNALS:
            if signal.getsignal(stop) is handler:
                signal.signal(stop, previous[stop])
