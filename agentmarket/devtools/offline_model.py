"""The offline model: an OpenAI-compatible HTTP server that needs no network
(docs/operations.md#the-offline-model).

`./scripts/dev` runs it when no `OPENAI_API_KEY` is set; end-to-end tests and benchmarks use it as
a deterministic model and as a fault injector. Build the ASGI app with
`create_offline_model_app(OfflineModelConfig(...))`, or run it with `serve(host, port, config)`.

Endpoints
---------
- `GET  /v1/models`, `GET /v1/models/{id}`: gpt-4o-mini, gpt-4o and `config.model_names`.
- `POST /v1/chat/completions`: OpenAI's request and response shapes, `stream` (server-sent events,
  `stream_options.include_usage`), `max_tokens` / `max_completion_tokens` (a longer reply is cut to
  that many tokens with `finish_reason: "length"`).
- `GET  /_offline/requests[?conversation=ID]`: every chat request received, oldest first (a list).
  `DELETE /_offline/requests` clears that list (attempt counters are kept, so clearing never shifts
  another test's fault sequence).
- `GET  /_offline/health`: `{"status": "ok"}`, no key needed (readiness probes).

`/v1/*` needs `Authorization: Bearer <key>`; any key is accepted except `config.reject_key`. A
missing header or the reject key gets 401 `invalid_api_key`. Keys are never logged or stored: a
request record keeps the last 4 characters of keys of 12 characters or more, else "****".

Reply format (stable; tests assert on it)
-----------------------------------------
    Echo: <last user message> (turn <T>, <M> messages[, system: "<S>"])[ <lorem words>]

- `<last user message>`: the text of the last message with role "user" (string content, or the
  "text" parts of a content list joined with spaces), with the `[[...]]` markers below removed and
  every run of whitespace collapsed to one space. Empty when there is no user message (the reply
  then starts `Echo: (turn`).
- `<T>`: the number of messages with role "user"; `<M>`: the number of messages (all roles). The
  word is always "messages", even for 1.
- `system: "<S>"`: only when a message with role "system" or "developer" exists; `<S>` is the first
  such message's text, whitespace collapsed, cut to its first 40 characters followed by "…" when it
  was longer.
- `[[long:N]]` appends N words cycling through `LOREM_WORDS` ("lorem ipsum dolor sit amet ...").

Example: messages [system "You are Rev, a code reviewer.", user "hi", assistant "...", user
"hello   there. [[tps:50]]"] give `Echo: hello there. (turn 2, 4 messages, system: "You are Rev, a
code reviewer.")`. `render_reply(messages)` computes the reply for a messages list.

Tokens are words with their trailing space (`re.findall(r"\\S+\\s*", reply)`); a stream sends one
per chunk. `completion_tokens` is the number of tokens sent; `prompt_tokens` is the number of
whitespace-separated words across every message's text (markers included) plus 3 per message.

Markers (in the last user message only; removed from the echo; a bad value is a 400)
-----------------------------------------------------------------------------------
- `[[long:N]]`: N extra words (0 <= N <= 1,000,000), for long streams (cancel tests).
- `[[latency:MS]]`, `[[ttft:MS]]`, `[[tps:N]]`: override the config's timing for this request.
- `[[fault:SPEC]]`: SPEC is a comma-separated list of outcomes, one per attempt of this
  conversation; attempts after the list's end succeed. Outcomes:
  `ok`; `429` (Retry-After 1 s) or `429:R` (Retry-After R s, and `retry-after-ms`), OpenAI's
  rate-limit body, code "rate_limit_exceeded"; `500`, `503` (server_error); `timeout` (hangs
  before the headers for `config.hang_seconds`, or until the client disconnects, then answers 504);
  `cut` (a stream sends the role chunk and `config.cut_after_tokens` tokens, then the connection is
  closed without the final chunk or `[DONE]`; a non-stream request gets a 500); `401`
  (invalid_api_key); `400` (invalid_request_error).

The conversation identity is the sha256 of the JSON of the `messages` list
(`conversation_identity`, keys sorted, compact separators), so a retry of the same request is the
next attempt while other conversations keep their own count (use unique text per test: two
conversations with identical messages share a counter). Attempts count only requests that pass the
key, body and model checks. Responses carry `x-offline-conversation`, `x-offline-attempt` and
`x-offline-outcome` headers.

Global faults for benchmarks: with `config.fault_rate` > 0, a request without a `[[fault:...]]`
marker gets a fault when a uniform number derived from sha256(seed, conversation, attempt) is
below the rate: seeded and independent of how concurrent requests interleave. `config.fault_kind`
is one outcome (`"500"`) or a comma-separated mix (`"429,500,503,timeout,cut"`, the soak's); with
a mix, each faulted request gets one of its outcomes, picked evenly by another part of the same
digest (list an outcome twice to weigh it double).

Timing: `latency_ms` passes before the response headers (for every request that passes the checks,
faults included); a stream then sends the role chunk, waits `ttft_ms`, and sends the tokens
`1 / tokens_per_second` s apart (0 = no pause). A non-stream reply waits latency + ttft +
(tokens - 1) / tps before answering. Waits end early when the client disconnects (then nothing more
is sent). Under `httpx.ASGITransport` (which buffers whole responses and ignores client timeouts) a
`cut` stream surfaces as httpx's `AssertionError` (the SDK wraps it in `APIConnectionError`), and
`timeout` waits the full `hang_seconds`: keep it small there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_REJECT_KEY",
    "LOREM_WORDS",
    "OUTCOMES",
    "OfflineModel",
    "OfflineModelConfig",
    "Outcome",
    "RequestRecord",
    "add_arguments",
    "config_from_args",
    "conversation_identity",
    "create_offline_model_app",
    "parse_fault_spec",
    "parse_outcome",
    "render_reply",
    "serve",
    "split_tokens",
]

DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o")
DEFAULT_REJECT_KEY: Final = "sk-offline-invalid-key-000000000000"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8089
OWNED_BY: Final = "agentmarket-offline"
MODELS_CREATED: Final = 1_700_000_000
SYSTEM_FINGERPRINT: Final = "fp_offline"
SYSTEM_EXCERPT_CHARS: Final = 40
MAX_LONG_WORDS: Final = 1_000_000
OUTCOMES: Final = frozenset({"ok", "429", "500", "503", "timeout", "cut", "401", "400"})
ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
LOREM_WORDS: Final = (
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet,",
    "consectetur",
    "adipiscing",
    "elit,",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua.",
)

_MARKER = re.compile(r"\[\[(long|latency|ttft|tps|fault):([^\[\]]*)\]\]")
_TOKEN = re.compile(r"\S+\s*")
_CUT_LOG_MESSAGE = "ASGI callable returned without completing response."

log = logging.getLogger("agentmarket.offline_model")


# Fault outcomes


@dataclass(frozen=True)
class Outcome:
    """One attempt's fate: `kind` is one of OUTCOMES; `retry_after` (seconds) only for 429."""

    kind: str
    retry_after: float = 1.0

    def __str__(self) -> str:
        if self.kind == "429" and self.retry_after != 1.0:
            return f"429:{_format_number(self.retry_after)}"
        return self.kind


OK: Final = Outcome("ok")


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _number(text: str, what: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{what} must be a finite number >= {_format_number(minimum)}")
    return value


def parse_outcome(text: str) -> Outcome:
    """`ok`, `429`, `429:R`, `500`, `503`, `timeout`, `cut`, `401` or `400` (case-insensitive)."""
    spec = text.strip().lower()
    if spec.startswith("429:"):
        return Outcome("429", _number(spec[4:], "Retry-After in 429:R"))
    if spec in OUTCOMES:
        return Outcome(spec)
    raise ValueError(
        f"unknown fault outcome {text.strip()!r}; expected one of "
        "ok, 429, 429:R, 500, 503, timeout, cut, 401, 400"
    )


def parse_fault_spec(spec: str) -> tuple[Outcome, ...]:
    """`"429,500,timeout"` -> the outcomes of attempts 1, 2, 3 (later attempts succeed)."""
    if not spec.strip():
        raise ValueError("empty fault spec")
    return tuple(parse_outcome(part) for part in spec.split(","))


# Configuration


@dataclass(frozen=True)
class OfflineModelConfig:
    """Everything defaults to an instant, fault-free model."""

    latency_ms: float = 0.0  # before the response headers
    ttft_ms: float = 0.0  # after the headers (and the role chunk), before the first token
    tokens_per_second: float = 0.0  # 0 = no pause between tokens
    hang_seconds: float = 600.0  # how long a `timeout` outcome hangs
    cut_after_tokens: int = 3  # tokens a `cut` stream sends before it drops the connection
    fault_rate: float = 0.0  # 0..1: share of unmarked requests that get fault_kind
    fault_kind: str = "500"  # an outcome ("429", "429:2", "cut") or a mix ("429,500,timeout")
    seed: int = 0  # seeds the global fault draw
    model_names: tuple[str, ...] = ()  # served in addition to DEFAULT_MODELS
    reject_key: str = DEFAULT_REJECT_KEY  # this API key gets 401 invalid_api_key
    max_records: int = 100_000  # request records kept (oldest dropped first)
    max_conversations: int = 100_000  # attempt counters kept (least recently used dropped)

    def __post_init__(self) -> None:
        for name in ("latency_ms", "ttft_ms", "tokens_per_second", "hang_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        parse_fault_spec(self.fault_kind)
        if self.cut_after_tokens < 0:
            raise ValueError("cut_after_tokens must be >= 0")
        if self.max_records < 1 or self.max_conversations < 1:
            raise ValueError("max_records and max_conversations must be >= 1")
        if not self.reject_key:
            raise ValueError("reject_key must not be empty")
        object.__setattr__(self, "model_names", tuple(self.model_names))

    @property
    def models(self) -> tuple[str, ...]:
        extra = tuple(m for m in self.model_names if m not in DEFAULT_MODELS)
        return DEFAULT_MODELS + tuple(dict.fromkeys(extra))


# Conversations, markers and replies


def conversation_identity(messages: Any) -> str:
    """sha256 (hex) of the messages list as compact JSON with sorted keys."""
    data = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass(frozen=True)
class Markers:
    long_words: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tps: float | None = None
    fault: tuple[Outcome, ...] | None = None


def _collapse(text: str) -> str:
    return " ".join(text.split())


def parse_markers(text: str) -> tuple[str, Markers]:
    """The text without its `[[...]]` markers (whitespace collapsed) and the markers' values.

    Raises ValueError on a bad value; the last of repeated markers wins.
    """
    values: dict[str, Any] = {}
    for match in _MARKER.finditer(text):
        name, raw = match.group(1), match.group(2)
        if name == "long":
            try:
                count = int(raw.strip())
            except ValueError:
                raise ValueError(f"[[long:N]] needs an integer, got {raw!r}") from None
            if not 0 <= count <= MAX_LONG_WORDS:
                raise ValueError(f"[[long:N]] needs 0 <= N <= {MAX_LONG_WORDS}")
            values["long_words"] = count
        elif name == "fault":
            values["fault"] = parse_fault_spec(raw)
        elif name == "tps":
            values["tps"] = _number(raw, "[[tps:N]]")
        else:
            values[f"{name}_ms"] = _number(raw, f"[[{name}:MS]]")
    return _collapse(_MARKER.sub(" ", text)), Markers(**values)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(
        part["text"]
        for part in content
        if isinstance(part, Mapping)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    )


def _lorem(count: int) -> list[str]:
    return [LOREM_WORDS[i % len(LOREM_WORDS)] for i in range(count)]


def _build_reply(texts: Sequence[tuple[str, str]]) -> tuple[str, Markers]:
    user_texts = [text for role, text in texts if role == "user"]
    echoed, markers = parse_markers(user_texts[-1]) if user_texts else ("", Markers())
    words = ["Echo:", *echoed.split()]
    tail = f"(turn {len(user_texts)}, {len(texts)} messages"
    system = next((text for role, text in texts if role in ("system", "developer")), None)
    if system is not None:
        excerpt = _collapse(system)
        if len(excerpt) > SYSTEM_EXCERPT_CHARS:
            excerpt = excerpt[:SYSTEM_EXCERPT_CHARS] + "…"
        tail += f', system: "{excerpt}"'
    words.append(tail + ")")
    words.extend(_lorem(markers.long_words))
    return " ".join(words), markers


def render_reply(messages: Sequence[Mapping[str, Any]]) -> str:
    """The reply the offline model gives to these (OpenAI-style) messages."""
    texts = [(str(m.get("role", "")), _content_text(m.get("content"))) for m in messages]
    return _build_reply(texts)[0]


def split_tokens(text: str) -> list[str]:
    """Words with their trailing whitespace: the unit of streaming and of completion_tokens."""
    return _TOKEN.findall(text)


def _prompt_tokens(texts: Sequence[tuple[str, str]]) -> int:
    return sum(len(text.split()) + 3 for _, text in texts)


# Request parsing


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class _ChatRequest:
    model: str
    messages: list[Any]
    texts: list[tuple[str, str]]
    stream: bool
    include_usage: bool
    max_tokens: int | None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_chat_request(body: Any) -> _ChatRequest:
    """The request's fields, checked in the order OpenAI reports them; raises _BadRequest."""
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    model = _parse_model(body)
    messages = _parse_messages(body)
    texts = [_message_text(i, message) for i, message in enumerate(messages)]
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _BadRequest("Invalid type for 'stream': expected a boolean.", "stream")
    include_usage = _parse_include_usage(body, stream=bool(stream))
    temperature = body.get("temperature")
    if temperature is not None and (not _is_number(temperature) or not 0 <= temperature <= 2):
        raise _BadRequest(
            "Invalid 'temperature': expected a number between 0 and 2.", "temperature"
        )
    max_tokens = _parse_max_tokens(body)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _BadRequest("Invalid type for 'user': expected a string.", "user")
    return _ChatRequest(
        model=model,
        messages=messages,
        texts=texts,
        stream=bool(stream),
        include_usage=include_usage,
        max_tokens=max_tokens,
    )


def _parse_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise _BadRequest("you must provide a model parameter", "model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("Invalid type for 'model': expected a non-empty string.", "model")
    return model


def _parse_messages(body: dict[str, Any]) -> list[Any]:
    if "messages" not in body:
        raise _BadRequest(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _BadRequest(
            "Invalid type for 'messages': expected an array.", "messages", "invalid_type"
        )
    if not messages:
        raise _BadRequest("[] is too short - 'messages'", "messages", "empty_array")
    return messages


def _message_text(i: int, message: Any) -> tuple[str, str]:
    """(role, text) of `messages[i]`, after checking its role and content."""
    where = f"messages.[{i}]"
    if not isinstance(message, dict):
        raise _BadRequest(f"Invalid type for '{where}': expected an object.", where)
    role = message.get("role")
    if role not in ROLES:
        raise _BadRequest(
            f"Invalid value for '{where}.role': expected one of {', '.join(sorted(ROLES))}.",
            f"{where}.role",
            "invalid_value",
        )
    content = message.get("content")
    if "content" not in message and role != "assistant":
        raise _BadRequest(
            f"Missing required parameter: '{where}.content'.",
            f"{where}.content",
            "missing_required_parameter",
        )
    valid = isinstance(content, str) or (content is None and role == "assistant")
    if isinstance(content, list):
        valid = all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content)
    if not valid:
        raise _BadRequest(
            f"Invalid type for '{where}.content': expected a string or an array of parts.",
            f"{where}.content",
            "invalid_type",
        )
    return role, _content_text(content)


def _parse_include_usage(body: dict[str, Any], *, stream: bool) -> bool:
    """`stream_options.include_usage` (only allowed on a stream)."""
    stream_options = body.get("stream_options")
    if stream_options is None:
        return False
    if not stream:
        raise _BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        )
    if not isinstance(stream_options, dict):
        raise _BadRequest(
            "Invalid type for 'stream_options': expected an object.", "stream_options"
        )
    usage_flag = stream_options.get("include_usage")
    if usage_flag is not None and not isinstance(usage_flag, bool):
        raise _BadRequest(
            "Invalid type for 'stream_options.include_usage': expected a boolean.",
            "stream_options.include_usage",
        )
    return bool(usage_flag)


def _parse_max_tokens(body: dict[str, Any]) -> int | None:
    """The smaller of `max_tokens` and `max_completion_tokens`, when either is given."""
    max_tokens: int | None = None
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _BadRequest(f"Invalid '{name}': expected an integer >= 1.", name)
        max_tokens = value if max_tokens is None else min(max_tokens, value)
    return max_tokens


# Errors


def _error(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _invalid_key(headers: Mapping[str, str] | None = None) -> JSONResponse:
    return _error(
        401,
        "Incorrect API key provided",
        "invalid_request_error",
        code="invalid_api_key",
        headers=headers,
    )


def _fault_response(outcome: Outcome, model: str, headers: dict[str, str]) -> JSONResponse:
    if outcome.kind == "429":
        retry_after = _format_number(outcome.retry_after)
        headers = {
            **headers,
            "retry-after": retry_after,
            "retry-after-ms": _format_number(round(outcome.retry_after * 1000)),
        }
        return _error(
            429,
            f"Rate limit reached for {model} on requests per min (RPM): offline model fault "
            f"injection. Please try again in {retry_after}s.",
            "requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if outcome.kind == "401":
        return _invalid_key(headers)
    if outcome.kind == "400":
        return _error(
            400,
            "Invalid request (offline model fault injection).",
            "invalid_request_error",
            headers=headers,
        )
    if outcome.kind == "503":
        return _error(
            503,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            headers=headers,
        )
    if outcome.kind == "timeout":
        return _error(
            504, "The server timed out answering the request.", "server_error", headers=headers
        )
    return _error(
        500,
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        headers=headers,
    )


_STATUS: Final = {
    "ok": 200,
    "cut": 200,
    "429": 429,
    "500": 500,
    "503": 503,
    "timeout": 504,
    "401": 401,
    "400": 400,
}


# Request records


@dataclass
class RequestRecord:
    seq: int
    t_monotonic: float  # time.monotonic() in the server process when the request arrived
    t_wall: float  # time.time() when the request arrived
    conversation: str | None = None
    attempt: int | None = None  # None: rejected before attempts are counted (401/400/404)
    outcome: str = "ok"  # an Outcome, or "401"/"400"/"404" for requests rejected by the checks
    status: int = 200
    model: str | None = None
    stream: bool | None = None
    key_last4: str | None = None
    tokens_sent: int = 0  # content tokens sent (streams) or returned (non-stream)
    client_disconnected: bool = False  # the client went away before the response was complete
    error: str | None = None  # why a request was rejected (400)
    last_user_message: str | None = None  # its first 200 characters, so tests can find a request
    max_tokens: int | None = None  # the token limit the client asked for, if any


def _key_last4(key: str) -> str:
    return key[-4:] if len(key) >= 12 else "****"


# Disconnect-aware waiting


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _sleep_unless_disconnected(receive: Receive, seconds: float) -> bool:
    """Sleep; True (early) when the client disconnected meanwhile."""
    if seconds <= 0:
        return False
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
        return watcher in done
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


class _EventStream(StreamingResponse):
    """SSE body sent chunk by chunk; stops when the client disconnects. With `complete=False` the
    body is never finished, so the server drops the connection (a `cut`)."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str],
        record: RequestRecord,
        complete: bool,
    ) -> None:
        super().__init__(chunks, headers=dict(headers), media_type="text/event-stream")
        self._chunks = chunks
        self._record = record
        self._complete = complete

    async def _produce(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self._chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self._complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.ensure_future(self._produce(send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        done: set[asyncio.Future[None]] = set()
        try:
            done, _ = await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)
        if producer not in done:
            self._record.client_disconnected = True
            return
        error = producer.exception()
        if error is not None and not isinstance(error, OSError):
            raise error


# The model


class OfflineModel:
    """State (attempt counters, request records) and the endpoints of one offline model."""

    def __init__(self, config: OfflineModelConfig) -> None:
        self.config = config
        self._attempts: OrderedDict[str, int] = OrderedDict()
        self._records: deque[RequestRecord] = deque(maxlen=config.max_records)
        self._seq = 0
        self._global_faults = parse_fault_spec(config.fault_kind)

    # state

    def records(self, conversation: str | None = None) -> list[dict[str, Any]]:
        return [
            asdict(r)
            for r in self._records
            if conversation is None or r.conversation == conversation
        ]

    def clear_records(self) -> None:
        self._records.clear()

    def _new_record(self) -> RequestRecord:
        self._seq += 1
        record = RequestRecord(seq=self._seq, t_monotonic=time.monotonic(), t_wall=time.time())
        self._records.append(record)
        return record

    def _next_attempt(self, identity: str) -> int:
        attempt = self._attempts.pop(identity, 0) + 1
        self._attempts[identity] = attempt
        while len(self._attempts) > self.config.max_conversations:
            self._attempts.popitem(last=False)
        return attempt

    def _decide(self, identity: str, attempt: int, markers: Markers) -> Outcome:
        if markers.fault is not None:
            return markers.fault[attempt - 1] if attempt <= len(markers.fault) else OK
        rate = self.config.fault_rate
        if rate <= 0:
            return OK
        digest = hashlib.sha256(f"{self.config.seed}:{identity}:{attempt}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw >= rate:
            return OK
        faults = self._global_faults
        return faults[int.from_bytes(digest[8:16], "big") % len(faults)]

    # endpoints

    def _authorized(self, request: Request) -> str | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or key == self.config.reject_key:
            return None
        return key

    def _check_key(self, request: Request) -> Response | None:
        return None if self._authorized(request) else _invalid_key()

    async def list_models(self, request: Request) -> Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        data = [self._model_object(m) for m in self.config.models]
        return JSONResponse({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        if (denied := self._check_key(request)) is not None:
            return denied
        model = request.path_params["model"]
        if model not in self.config.models:
            return _model_not_found(model)
        return JSONResponse(self._model_object(model))

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": OWNED_BY}

    async def get_records(self, request: Request) -> Response:
        return JSONResponse(self.records(request.query_params.get("conversation")))

    async def delete_records(self, request: Request) -> Response:
        self.clear_records()
        return JSONResponse({"cleared": True})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def chat_completions(self, request: Request) -> Response:
        record = self._new_record()
        checked = await self._checked_request(request, record)
        if isinstance(checked, Response):
            return checked
        chat, markers = checked

        identity = conversation_identity(chat.messages)
        attempt = self._next_attempt(identity)
        outcome = self._decide(identity, attempt, markers)
        record.conversation, record.attempt, record.outcome = identity, attempt, str(outcome)
        record.status = _STATUS[outcome.kind]
        if outcome.kind == "cut" and not chat.stream:
            record.status = 500
        headers = {
            "x-request-id": f"req_{uuid.uuid4().hex}",
            "openai-model": chat.model,
            "x-offline-conversation": identity,
            "x-offline-attempt": str(attempt),
            "x-offline-outcome": str(outcome),
        }

        latency = markers.latency_ms if markers.latency_ms is not None else self.config.latency_ms
        pause = latency / 1000
        if outcome.kind == "timeout":
            pause += self.config.hang_seconds
        if await _sleep_unless_disconnected(request.receive, pause):
            record.client_disconnected = True
        if outcome.kind not in ("ok", "cut") or (outcome.kind == "cut" and not chat.stream):
            return _fault_response(outcome, chat.model, headers)

        reply = _Reply.build(chat, markers, self.config)
        if not chat.stream:
            return await reply.respond(request.receive, record, headers)
        cut_after = self.config.cut_after_tokens if outcome.kind == "cut" else None
        return reply.stream(record, headers, cut_after=cut_after)

    async def _checked_request(
        self, request: Request, record: RequestRecord
    ) -> tuple[_ChatRequest, Markers] | Response:
        """The request and its markers once the key, body and model pass; else the error."""
        key = self._authorized(request)
        if request.headers.get("authorization"):
            _, _, raw_key = request.headers["authorization"].partition(" ")
            record.key_last4 = _key_last4(raw_key.strip())
        if key is None:
            record.outcome, record.status = "401", 401
            return _invalid_key()
        try:
            body = json.loads(await request.body())
        except ValueError:
            record.outcome, record.status, record.error = "400", 400, "invalid JSON"
            return _error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
            )
        if isinstance(body, dict):
            record.model = body.get("model") if isinstance(body.get("model"), str) else None
            record.stream = body.get("stream") is True
        try:
            chat = _parse_chat_request(body)
            user_texts = [text for role, text in chat.texts if role == "user"]
            markers = parse_markers(user_texts[-1])[1] if user_texts else Markers()
            record.last_user_message = user_texts[-1][:200] if user_texts else None
            record.max_tokens = chat.max_tokens
        except (_BadRequest, ValueError) as exc:
            bad = exc if isinstance(exc, _BadRequest) else _BadRequest(str(exc), "messages")
            record.outcome, record.status, record.error = "400", 400, bad.message
            return _error(400, bad.message, "invalid_request_error", param=bad.param, code=bad.code)
        if chat.model not in self.config.models:
            record.outcome, record.status = "404", 404
            return _model_not_found(chat.model)
        return chat, markers


@dataclass(frozen=True)
class _Reply:
    """A successful answer to one request: its tokens, its timing and the ids its chunks carry."""

    chat: _ChatRequest
    tokens: list[str]  # already cut to the request's max_tokens
    finish_reason: str
    ttft: float  # seconds before the first token
    gap: float  # seconds between tokens
    prompt_tokens: int
    completion_id: str
    created: int

    @classmethod
    def build(cls, chat: _ChatRequest, markers: Markers, config: OfflineModelConfig) -> _Reply:
        tokens = split_tokens(_build_reply(chat.texts)[0])
        finish_reason = "stop"
        if chat.max_tokens is not None and len(tokens) > chat.max_tokens:
            tokens, finish_reason = tokens[: chat.max_tokens], "length"
        ttft = (markers.ttft_ms if markers.ttft_ms is not None else config.ttft_ms) / 1000
        tps = markers.tps if markers.tps is not None else config.tokens_per_second
        return cls(
            chat=chat,
            tokens=tokens,
            finish_reason=finish_reason,
            ttft=ttft,
            gap=1 / tps if tps > 0 else 0.0,
            prompt_tokens=_prompt_tokens(chat.texts),
            completion_id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
        )

    async def respond(
        self, receive: Receive, record: RequestRecord, headers: dict[str, str]
    ) -> JSONResponse:
        """The whole reply in one `chat.completion`, after the time its stream would take."""
        wait = self.ttft + self.gap * max(0, len(self.tokens) - 1)
        if await _sleep_unless_disconnected(receive, wait):
            record.client_disconnected = True
        record.tokens_sent = len(self.tokens)
        return JSONResponse(
            {
                "id": self.completion_id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.chat.model,
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "".join(self.tokens),
                            "refusal": None,
                        },
                        "logprobs": None,
                        "finish_reason": self.finish_reason,
                    }
                ],
                "usage": _usage(self.prompt_tokens, len(self.tokens)),
            },
            headers=headers,
        )

    def stream(
        self, record: RequestRecord, headers: dict[str, str], *, cut_after: int | None
    ) -> _EventStream:
        """The reply as server-sent events; with `cut_after`, that many tokens and no end."""
        cut = cut_after is not None
        tokens = self.tokens[:cut_after] if cut_after is not None else self.tokens
        return _EventStream(
            self._events(tokens, record, cut=cut),
            headers={**headers, "cache-control": "no-cache"},
            record=record,
            complete=not cut,
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        data: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.chat.include_usage:
            data["usage"] = None
        return _sse(data)

    async def _events(
        self, tokens: list[str], record: RequestRecord, *, cut: bool
    ) -> AsyncIterator[bytes]:
        yield self._chunk({"role": "assistant", "content": ""}, None)
        if self.ttft > 0:
            await asyncio.sleep(self.ttft)
        for i, token in enumerate(tokens):
            if i and self.gap:
                await asyncio.sleep(self.gap)
            elif not self.gap:
                await asyncio.sleep(0)  # let other requests (and disconnects) through
            yield self._chunk({"content": token}, None)
            record.tokens_sent += 1
        if cut:
            return
        yield self._chunk({}, self.finish_reason)
        if self.chat.include_usage:
            yield _sse(
                {
                    "id": self.completion_id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.chat.model,
                    "system_fingerprint": SYSTEM_FINGERPRINT,
                    "choices": [],
                    "usage": _usage(self.prompt_tokens, len(tokens)),
                }
            )
        yield b"data: [DONE]\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(data: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )


def _model_not_found(model: str) -> JSONResponse:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = f"Invalid URL ({request.method} {request.url.path})"
    if status == 405:
        message = f"Method {request.method} not allowed for {request.url.path}"
    return _error(status, message, "invalid_request_error")


def _drop_cut_log(record: logging.LogRecord) -> bool:
    return record.getMessage() != _CUT_LOG_MESSAGE


def _quiet_cut_logs() -> None:
    """A `cut` ends the app without finishing the body on purpose; uvicorn logs that as an error."""
    logger = logging.getLogger("uvicorn.error")
    if _drop_cut_log not in logger.filters:
        logger.addFilter(_drop_cut_log)


def create_offline_model_app(config: OfflineModelConfig | None = None) -> Starlette:
    """The ASGI app; its state is `app.state.offline_model` (an OfflineModel)."""
    model = OfflineModel(config or OfflineModelConfig())
    _quiet_cut_logs()
    app = Starlette(
        routes=[
            Route("/v1/models", model.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", model.get_model, methods=["GET"]),
            Route("/v1/chat/completions", model.chat_completions, methods=["POST"]),
            Route("/_offline/requests", model.get_records, methods=["GET"]),
            Route("/_offline/requests", model.delete_records, methods=["DELETE"]),
            Route("/_offline/health", model.health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.offline_model = model
    return app


def serve(host: str, port: int, config: OfflineModelConfig) -> None:
    """Run the offline model with uvicorn until interrupted."""
    log.info("offline model on http://%s:%d/v1", host, port)
    uvicorn.run(
        create_offline_model_app(config),
        host=host,
        port=port,
        access_log=False,
        lifespan="off",
        ws="none",
        log_level="info",
    )


# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `agentmarket offline-model` (including --host and --port for serve())."""
    defaults = OfflineModelConfig()
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: %(default)s")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    parser.add_argument(
        "--latency-ms", type=float, default=defaults.latency_ms, help="delay before the headers"
    )
    parser.add_argument(
        "--ttft-ms", type=float, default=defaults.ttft_ms, help="delay before the first token"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=defaults.tokens_per_second,
        help="stream speed (0 = no pause)",
    )
    parser.add_argument(
        "--hang-seconds",
        type=float,
        default=defaults.hang_seconds,
        help="how long a `timeout` fault hangs (default: %(default)s)",
    )
    parser.add_argument(
        "--cut-after-tokens",
        type=int,
        default=defaults.cut_after_tokens,
        help="tokens a `cut` stream sends before dropping (default: %(default)s)",
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=defaults.fault_rate,
        help="0..1: share of requests that get --fault-kind",
    )
    parser.add_argument(
        "--fault-kind",
        default=defaults.fault_kind,
        help="429, 429:R, 500, 503, cut, timeout, 401 or 400, or a comma-separated mix of them"
        " (each faulted request gets one, evenly; default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the fault draw")
    parser.add_argument(
        "--model",
        dest="model_names",
        action="append",
        default=[],
        metavar="NAME",
        help="serve this model id too (repeatable)",
    )
    parser.add_argument(
        "--reject-key",
        default=defaults.reject_key,
        help="API key answered with 401 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-records", type=int, default=defaults.max_records, help="request records kept"
    )


def config_from_args(args: argparse.Namespace) -> OfflineModelConfig:
    """Raises ValueError on an invalid combination (e.g. --fault-rate 2)."""
    return OfflineModelConfig(
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        hang_seconds=args.hang_seconds,
        cut_after_tokens=args.cut_after_tokens,
        fault_rate=args.fault_rate,
        fault_kind=args.fault_kind,
        seed=args.seed,
        model_names=tuple(args.model_names),
        reject_key=args.reject_key,
        max_records=args.max_records,
    )
