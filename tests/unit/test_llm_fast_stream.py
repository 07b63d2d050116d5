"""LLMClient's own SSE parsing (the fast path): framing, errors, and parity with the SDK's path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from agentmarket.llm import client as client_module
from agentmarket.llm.client import (
    Completed,
    LLMClient,
    Retrying,
    StreamEvent,
    TextDelta,
    TokenUsage,
)
from agentmarket.llm.sse import SSEDecoder
from tests.unit.test_llm import (
    BASE_URL,
    JITTER,
    PLATFORM_KEY,
    USAGE,
    BrokenStream,
    Pieces,
    chunk,
    collect,
    failure,
    ok_body,
    request,
    run_until_error,
    sse,
    text_of,
)

SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}


def streamed(*pieces: bytes) -> httpx.Response:
    return httpx.Response(200, stream=Pieces(*pieces), headers=SSE_HEADERS)


def in_bytes(body: bytes) -> httpx.Response:
    """The body one byte per read: every boundary a network read could fall on."""
    return streamed(*(body[i : i + 1] for i in range(len(body))))


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def no_sdk_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any) -> None:
        raise AssertionError("the SDK's chunk parsing was used")

    monkeypatch.setattr(client_module, "_sdk_chunks", refuse)


async def make_client(*, fast: bool = True, max_retries: int = 3) -> LLMClient:
    async def no_sleep(_: float) -> None:
        return None

    return LLMClient(
        base_url=BASE_URL,
        platform_api_key=PLATFORM_KEY,
        jitter=JITTER if fast else 0.0,
        sleep=no_sleep,
        fast_stream=fast,
        max_retries=max_retries,
    )


async def events_of(response: httpx.Response | list[httpx.Response], *, fast: bool = True):
    side_effect = response if isinstance(response, list) else [response]
    with respx.mock(base_url=BASE_URL) as mock:
        mock.post("/chat/completions").mock(side_effect=side_effect)
        llm = await make_client(fast=fast)
        try:
            return await collect(llm, request())
        finally:
            await llm.aclose()


def completed(events: list[StreamEvent]) -> Completed:
    last = events[-1]
    assert isinstance(last, Completed)
    return last


# --- the decoder --------------------------------------------------------------------------------


def decode_all(*pieces: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.finish()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_decoder_line_endings(newline: bytes) -> None:
    body = newline.join([b"data: one", b"", b"data:two", b"", b""])
    assert decode_all(body) == [b"one", b"two"]
    assert decode_all(*(body[i : i + 1] for i in range(len(body)))) == [b"one", b"two"]


def test_decoder_multi_line_data_comments_and_other_fields() -> None:
    body = (
        b": keep-alive\n\n"
        b'event: message\nid: 7\nretry: 100\ndata: {"a":\ndata:  1}\n\n'
        b":another comment\n"
        b"data\n\n"
        b"event: ping\n\n"
    )
    assert decode_all(body) == [b'{"a":\n 1}', b""]


def test_decoder_drops_an_unfinished_event() -> None:
    assert decode_all(b"data: one\n\ndata: two\n") == [b"one"]
    assert decode_all(b"data: one\n\ndata: two") == [b"one"]


def test_decoder_crlf_split_between_reads() -> None:
    assert decode_all(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [b"a", b"b"]


def test_decoder_keeps_a_utf8_character_cut_between_reads() -> None:
    data = "data: héllo ✓ 😀\n\n".encode()
    cut = data.index("😀".encode()) + 2
    assert decode_all(data[:cut], data[cut:]) == ["héllo ✓ 😀".encode()]


# --- the client on the fast path ----------------------------------------------------------------


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_streams_text_usage_model_and_finish_reason() -> None:
    events = await events_of(httpx.Response(200, content=ok_body("Hel", "lo"), headers=SSE_HEADERS))
    assert events[:1] == [TextDelta("Hello")]  # one read: its chunks' text in one piece
    assert completed(events) == Completed(
        usage=TokenUsage(prompt_tokens=12, completion_tokens=3),
        model="gpt-test-2024",
        finish_reason="stop",
    )


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_gives_the_text_of_each_network_read_in_one_piece() -> None:
    # What a reader that lets tokens gather in the socket gets (workers.relay.Relay.read_delay):
    # one piece per read, however many chunks it held, and nothing held back across reads.
    first = sse(chunk("Hel"), chunk("lo"), chunk(", "), done=False)
    second = sse(chunk("wor"), done=False)
    third = sse(chunk("ld"), chunk(finish="stop"), chunk(choices=False, usage=USAGE))
    events = await events_of(streamed(first, second, third))
    assert events[:3] == [TextDelta("Hello, "), TextDelta("wor"), TextDelta("ld")]
    assert completed(events).usage == TokenUsage(12, 3)


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_with_crlf_comments_and_one_byte_reads() -> None:
    body = ok_body("Hé", "llo ✓ 😀").replace(b"\n", b"\r\n")
    body = b": keep-alive\r\n\r\n" + body.replace(b"data: [DONE]", b": ping\r\n\r\ndata: [DONE]")
    events = await events_of(in_bytes(body))
    assert text_of(events) == "Héllo ✓ 😀"
    assert completed(events).usage == TokenUsage(12, 3)


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_multi_line_data() -> None:
    pretty = json.dumps(chunk("Hi", finish="length"), indent=1).replace("\n", "\ndata: ")
    body = f"data: {pretty}\n\ndata: [DONE]\n\n".encode()
    events = await events_of(streamed(body))
    assert text_of(events) == "Hi"
    # a reply cut by max_tokens (the worker stores it as truncated)
    assert completed(events).finish_reason == "length"
    assert completed(events).usage is None


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_without_usage_or_done() -> None:
    events = await events_of(streamed(sse(chunk("Hi"), chunk(finish="stop"), done=False)))
    assert text_of(events) == "Hi"
    assert completed(events) == Completed(usage=None, model="gpt-test-2024", finish_reason="stop")


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_ignores_other_choices_and_stops_at_done() -> None:
    other = chunk("NO")
    other["choices"][0]["index"] = 1
    after_done = sse(chunk("ignored", finish="stop"), done=False)
    body = sse(chunk("Hi"), other, chunk(finish="stop")) + after_done
    events = await events_of(streamed(body))
    assert text_of(events) == "Hi"


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_error_event_mid_stream_is_retried() -> None:
    bad = sse(chunk("Hel"), {"error": {"message": "overloaded", "type": "server_error"}})
    good = httpx.Response(200, content=ok_body("Hel", "lo"), headers=SSE_HEADERS)
    events = await events_of([streamed(bad), good])
    assert events[0] == TextDelta("Hel")
    retry = events[1]
    assert isinstance(retry, Retrying)
    assert (retry.attempt, retry.error_code) == (2, "upstream_connection_error")
    assert text_of(events[2:]) == "Hello"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.RemoteProtocolError("cut"), "upstream_connection_error"),
        (httpx.ReadTimeout("idle"), "upstream_timeout"),
    ],
)
@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_transport_failures_mid_stream_are_retried(
    exc: Exception, code: str
) -> None:
    broken = httpx.Response(
        200, stream=BrokenStream(sse(chunk("Hel"), done=False), exc), headers=SSE_HEADERS
    )
    good = httpx.Response(200, content=ok_body("Hel", "lo"), headers=SSE_HEADERS)
    events = await events_of([broken, good])
    assert isinstance(events[1], Retrying)
    assert events[1].error_code == code
    assert text_of(events[2:]) == "Hello"


@pytest.mark.usefixtures("no_sdk_parsing")
async def test_fast_path_stream_cut_fails_transiently(api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(
        side_effect=lambda _: streamed(sse(chunk("Hel"), done=False))
    )
    llm = await make_client()
    try:
        err = await failure(llm, request())
    finally:
        await llm.aclose()
    assert (err.error_code, err.transient, err.attempts) == ("upstream_connection_error", True, 4)


async def test_a_body_not_announced_as_sse_is_left_to_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    used: list[bool] = []
    sdk_chunks = client_module._sdk_chunks

    def spy(*args: Any) -> Any:
        used.append(True)
        return sdk_chunks(*args)

    monkeypatch.setattr(client_module, "_sdk_chunks", spy)
    events = await events_of(httpx.Response(200, content=ok_body("Hel", "lo")))
    assert used == [True]
    assert text_of(events) == "Hello"


# --- parity: the same events from the fast path and the SDK's path -----------------------------

PARITY_BODIES = {
    "ok": ok_body("Hel", "lo", "", " ✓"),
    "length": sse(chunk("Hi"), chunk(finish="length"), chunk(choices=False, usage=USAGE)),
    "no usage": sse(chunk("Hi"), chunk(finish="stop")),
    "crlf": ok_body("a", "b").replace(b"\n", b"\r\n"),
    "comments": b": hi\n\n" + ok_body("a"),
    "error then ok": sse(chunk("Hel"), {"error": {"message": "overloaded"}}),
    "error without message": sse({"error": {"code": 500}}),
    "cut": sse(chunk("Hel"), done=False),
}


@pytest.mark.parametrize("body", PARITY_BODIES.values(), ids=PARITY_BODIES.keys())
async def test_fast_path_matches_the_sdk_path(body: bytes) -> None:
    def responses() -> list[httpx.Response]:
        good = httpx.Response(200, content=ok_body("x"), headers=SSE_HEADERS)
        return [httpx.Response(200, content=body, headers=SSE_HEADERS), good]

    def without_delays(events: list[StreamEvent]) -> list[StreamEvent]:
        return [
            Retrying(e.attempt, 0, e.error_code) if isinstance(e, Retrying) else e
            for e in joined(events)
        ]

    fast = await events_of(responses(), fast=True)
    sdk = await events_of(responses(), fast=False)
    assert without_delays(fast) == without_delays(sdk)

    # Without retries: the same error, classified the same way (code, detail, transient).
    outcomes = []
    for fast_stream in (True, False):
        with respx.mock(base_url=BASE_URL) as mock:
            mock.post("/chat/completions").mock(side_effect=responses())
            llm = await make_client(fast=fast_stream, max_retries=0)
            try:
                events, err = await run_until_error(llm, request())
            finally:
                await llm.aclose()
        summary = None if err is None else (err.error_code, err.detail, err.transient, err.status)
        outcomes.append((joined(events), summary))
    assert outcomes[0] == outcomes[1]


def joined(events: list[StreamEvent]) -> list[StreamEvent]:
    """`events` with each run of text deltas as one: the fast path gives the text of one network
    read in one piece, the SDK one piece per chunk."""
    out: list[StreamEvent] = []
    for event in events:
        if isinstance(event, TextDelta) and out and isinstance(out[-1], TextDelta):
            out[-1] = TextDelta(out[-1].text + event.text)
        else:
            out.append(event)
    return out


@pytest.mark.parametrize(
    "overrides",
    [{}, {"temperature": 0.2, "max_tokens": 50}, {"temperature": 0.0, "max_tokens": 1}],
    ids=["defaults", "set", "zero"],
)
async def test_fast_path_sends_the_request_the_sdk_would(overrides: dict[str, Any]) -> None:
    """The fast path sends its body through `client.post` (no typed-params transform): the same
    method, URL, auth and SDK headers and the same JSON as `chat.completions.create`."""
    sent: list[httpx.Request] = []
    for fast in (True, False):
        with respx.mock(base_url=BASE_URL) as mock:
            route = mock.post("/chat/completions").mock(
                return_value=httpx.Response(200, content=ok_body("x"), headers=SSE_HEADERS)
            )
            llm = await make_client(fast=fast)
            try:
                await collect(llm, request(**overrides))
            finally:
                await llm.aclose()
            sent.append(route.calls.last.request)
    fast_request, sdk_request = sent
    assert (fast_request.method, fast_request.url) == (sdk_request.method, sdk_request.url)
    assert json.loads(fast_request.content) == json.loads(sdk_request.content)
    per_request = {"x-stainless-retry-count", "x-stainless-read-timeout", "content-length"}
    assert {k: v for k, v in fast_request.headers.items() if k not in per_request} == {
        k: v for k, v in sdk_request.headers.items() if k not in per_request
    }
    assert fast_request.headers["authorization"] == f"Bearer {PLATFORM_KEY}"
