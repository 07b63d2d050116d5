"""Holding a model stream's reads while its reader waits (docs/architecture.md#worker).

A reader that paces itself (the worker, `workers.relay.Relay.read_delay`) leaves the model's next
tokens unread until just before the flush that takes them. That alone saves its own wake-ups, but
the event loop still reads each token's network packet as it arrives and feeds it to the HTTP
parser. `StreamHold.held()` also stops the connection's reading for the wait: the tokens gather in
the kernel and arrive in one read when it ends. Measured on the worker at 100 tokens/s, 10
replies at once: 128-134 µs of CPU per streamed token without it, 81-106 with it
(docs/benchmarks.md).

Only the aiohttp backend's connection is reachable (`http_backend="aiohttp"`, the worker's
default); on any other, and whenever the connection is closing or already paused by its own flow
control, holding is a no-op and the stream is read as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import aiohttp
import httpx

__all__ = ["ReadTransport", "StreamHold"]


@runtime_checkable
class ReadTransport(Protocol):
    """What holding needs of a connection (asyncio's and uvloop's transports have it)."""

    def is_closing(self) -> bool: ...
    def is_reading(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class StreamHold:
    """The reading of one model stream at a time (a reply's current attempt); create one per
    reply and pass it to `LLMClient.stream`, which attaches each attempt's response."""

    __slots__ = ("_transport",)

    def __init__(self) -> None:
        self._transport: ReadTransport | None = None

    def attach(self, response: httpx.Response) -> None:
        """Follow the connection `response` is read from."""
        self.follow(_read_transport(response))

    def follow(self, transport: ReadTransport | None) -> None:
        self._transport = transport

    def detach(self) -> None:
        self._transport = None

    @property
    def reading(self) -> bool | None:
        """Whether the connection is being read (None: none is attached)."""
        return None if self._transport is None else self._transport.is_reading()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Nothing is read from the model's connection inside this block."""
        transport = self._transport
        if transport is None or transport.is_closing() or not transport.is_reading():
            yield  # nothing to hold, or the connection's flow control holds it already
            return
        transport.pause_reading()
        try:
            yield
        finally:
            if not transport.is_closing():
                transport.resume_reading()


def _read_transport(response: httpx.Response) -> ReadTransport | None:
    """The connection under an aiohttp-backed response: httpx wraps the transport's byte stream
    (`_stream`), which for httpx_aiohttp holds the aiohttp response (`_aiohttp_response`). None
    for any other backend, or when a library release moves them (tests/integration/
    test_llm_backends.py notices)."""
    stream = getattr(response.stream, "_stream", response.stream)
    upstream = getattr(stream, "_aiohttp_response", None)
    if not isinstance(upstream, aiohttp.ClientResponse) or upstream.connection is None:
        return None
    transport = upstream.connection.transport
    return transport if isinstance(transport, ReadTransport) else None
