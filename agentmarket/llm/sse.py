"""An incremental server-sent-events decoder that hands back each event's `data` as bytes.

`LLMClient` reads a streamed chat completion with it instead of the openai SDK's per-chunk
pydantic models (docs/benchmarks.md#model-stream-parsing-cpu-per-token). It follows the SSE
framing rules (https://html.spec.whatwg.org/multipage/server-sent-events.html) the way the SDK's
own decoder does: lines end in LF, CRLF or CR; a blank line ends an event; lines starting with
`:` are comments (keep-alives); the `data` lines of one event are joined with LF; one space after
the field's colon is dropped; other fields (`event`, `id`, `retry`) are ignored, and so is an
event without data. An event not ended by a blank line when the stream ends is dropped.

Bytes are split only on line breaks, so a multi-byte UTF-8 character cut between two network
reads comes back whole; decoding the text is left to the JSON parser.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]

_COLON = 0x3A  # ":"


class SSEDecoder:
    """Feed it the response's bytes as they arrive; `feed` returns the events completed so far."""

    __slots__ = ("_data", "_rest")

    def __init__(self) -> None:
        self._rest = b""  # an unfinished line (plus a held-back CR, see `feed`)
        self._data: list[bytes] = []  # the current event's data lines

    def feed(self, chunk: bytes) -> list[bytes]:
        """The `data` of every event that `chunk` completes, in order."""
        buffer = self._rest + chunk if self._rest else chunk
        held_cr = b""
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF: keep it for the next read.
            if buffer.endswith(b"\r"):
                buffer, held_cr = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._rest = lines.pop() + held_cr
        return self._events(lines)

    def _events(self, lines: list[bytes]) -> list[bytes]:
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            elif line == b"data":
                data.append(b"")
            # A comment (`:` first) or another field: nothing to keep.
        return events

    def finish(self) -> list[bytes]:
        """The stream ended: a line that was waiting only for its CR to be confirmed still counts,
        but an event without its closing blank line is dropped."""
        rest, self._rest = self._rest, b""
        events = self._events([rest[:-1]]) if rest.endswith(b"\r") else []
        self._data = []
        return events
