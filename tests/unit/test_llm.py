"""LLMClient against a mocked OpenAI-compatible endpoint (respx): streaming, retries, errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from agentmarket.llm.client import (
    AttemptInfo,
    Completed,
    CompletionRequest,
    LLMClient,
    LLMError,
    Retrying,
    StreamEvent,
    TextDelta,
    TokenUsage,
    parse_retry_after,
)

BASE_URL = "https://api.test/v1"
PLATFORM_KEY = "sk-platform-" + "P" * 40
USER_KEY = "sk-proj-" + "U1v2W3x4Y5z6" * 3 + "abcd"
JITTER = 0.1

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


def request(**overrides: Any) -> CompletionRequest:
    return CompletionRequest(model="gpt-test", messages=MESSAGES, **overrides)


# --- SSE bodies ---------------------------------------------------------------------------------


def chunk(
    content: str | None = None,
    *,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-test-2024",
        "choices": [],
        "usage": usage,
    }
    if choices:
        delta = {"role": "assistant", "content": content} if content is not None else {}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return body


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    if done:
        text += "data: [DONE]\n\n"
    return text.encode()


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def ok_body(*parts: str) -> bytes:
    return sse(
        *(chunk(p) for p in parts),
        chunk(finish="stop"),
        chunk(choices=False, usage=USAGE),
    )


class Pieces(httpx.AsyncByteStream):
    """Sends the body in the given pieces, one network read each."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece

    async def aclose(self) -> None:
        pass


def ok(*parts: str) -> httpx.Response:
    """A streamed reply as a model sends it: each event in its own network read."""
    events = ok_body(*(parts or ("Hel", "lo"))).split(b"\n\n")[:-1]
    return httpx.Response(
        200,
        stream=Pieces(*(event + b"\n\n" for event in events)),
        headers={"content-type": "text/event-stream"},
    )


def error(status: int, message: str = "boom", *, code: str | None = None, **headers: str):
    body = {"error": {"message": message, "type": "error", "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


class BrokenStream(httpx.AsyncByteStream):
    """Sends `first`, then fails the way a dropped connection does."""

    def __init__(self, first: bytes, exc: Exception) -> None:
        self.first = first
        self.exc = exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        raise self.exc

    async def aclose(self) -> None:
        pass


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def llm(sleeps: list[float]) -> AsyncIterator[LLMClient]:
    async def record(delay: float) -> None:
        sleeps.append(delay)

    client = LLMClient(
        base_url=BASE_URL, platform_api_key=PLATFORM_KEY, jitter=JITTER, sleep=record
    )
    yield client
    await client.aclose()


async def collect(llm: LLMClient, req: CompletionRequest, **kwargs: Any) -> list[StreamEvent]:
    async with contextlib.aclosing(llm.stream(req, **kwargs)) as events:
        return [event async for event in events]


async def failure(llm: LLMClient, req: CompletionRequest, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as caught:
        await collect(llm, req, **kwargs)
    return caught.value


async def run_until_error(
    llm: LLMClient, req: CompletionRequest
) -> tuple[list[StreamEvent], LLMError | None]:
    events: list[StreamEvent] = []
    try:
        async with contextlib.aclosing(llm.stream(req)) as stream:
            async for event in stream:
                events.append(event)
    except LLMError as exc:
        return events, exc
    return events, None


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def assert_no_key(*things: object) -> None:
    for thing in things:
        rendered = str(thing)
        assert USER_KEY not in rendered
        assert PLATFORM_KEY not in rendered
        assert "U1v2W3x4Y5z6" not in rendered


# --- success ------------------------------------------------------------------------------------


async def test_stream_yields_deltas_then_completed_with_usage(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(return_value=ok("Hel", "lo", "!"))

    events = await collect(llm, request(temperature=0.2, max_tokens=50))

    assert events == [
        TextDelta("Hel"),
        TextDelta("lo"),
        TextDelta("!"),
        Completed(
            usage=TokenUsage(prompt_tokens=12, completion_tokens=3),
            model="gpt-test-2024",
            finish_reason="stop",
        ),
    ]
    assert route.call_count == 1
    assert sleeps == []
    sent = json.loads(route.calls.last.request.content)
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == MESSAGES
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.2
    assert sent["max_completion_tokens"] == 50


async def test_optional_parameters_are_omitted(llm: LLMClient, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(return_value=ok())
    await collect(llm, request())
    sent = json.loads(route.calls.last.request.content)
    assert "temperature" not in sent
    assert "max_tokens" not in sent
    assert "max_completion_tokens" not in sent


async def test_completed_without_usage_chunk(llm: LLMClient, api: respx.MockRouter) -> None:
    body = sse(chunk("Hi"), chunk(finish="length"))
    api.post("/chat/completions").mock(return_value=httpx.Response(200, content=body))
    events = await collect(llm, request())
    assert events[-1] == Completed(usage=None, model="gpt-test-2024", finish_reason="length")


async def test_sdk_retries_are_off(llm: LLMClient, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(return_value=ok())
    await collect(llm, request())
    headers = route.calls.last.request.headers
    assert headers.get("x-stainless-retry-count") == "0"
    client = next(iter(llm._clients.values()))
    assert client.max_retries == 0
    assert client.timeout == httpx.Timeout(60.0, connect=5.0)


# --- keys ---------------------------------------------------------------------------------------


async def test_user_key_is_sent_when_given(llm: LLMClient, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(return_value=ok())
    await collect(llm, request(api_key=USER_KEY))
    assert route.calls.last.request.headers["authorization"] == f"Bearer {USER_KEY}"


async def test_platform_key_is_sent_otherwise(llm: LLMClient, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(return_value=ok())
    await collect(llm, request())
    assert route.calls.last.request.headers["authorization"] == f"Bearer {PLATFORM_KEY}"


async def test_one_sdk_client_per_key(llm: LLMClient, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(side_effect=lambda _: ok())
    for key in (USER_KEY, None, USER_KEY, None):
        await collect(llm, request(api_key=key))
    assert len(llm._clients) == 2
    assert all(USER_KEY not in digest for digest in llm._clients)


async def test_no_key_fails_without_any_http_call(
    api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(return_value=ok())
    client = LLMClient(base_url=BASE_URL, platform_api_key=None)
    try:
        err = await failure(client, request())
    finally:
        await client.aclose()
    assert err.error_code == "no_api_key"
    assert err.transient is False
    assert err.attempts == 0
    assert route.call_count == 0
    assert not api.calls


async def test_repr_hides_the_key() -> None:
    assert_no_key(repr(request(api_key=USER_KEY)))


# --- retries ------------------------------------------------------------------------------------


async def test_429_with_retry_after_then_500_then_success(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(
        side_effect=[error(429, "slow down", **{"retry-after": "3"}), error(500), ok()]
    )
    attempts: list[AttemptInfo] = []

    events = await collect(llm, request(), on_attempt=attempts.append)

    assert route.call_count == 3
    retries = [e for e in events if isinstance(e, Retrying)]
    assert [(r.attempt, r.error_code) for r in retries] == [
        (2, "upstream_rate_limited"),
        (3, "upstream_unavailable"),
    ]
    assert [r.delay for r in retries] == sleeps
    assert sleeps[0] == pytest.approx(3.0)  # Retry-After wins over the 1 s backoff
    assert 2.0 <= sleeps[1] <= 2.0 + JITTER
    assert text_of(events) == "Hello"
    assert isinstance(events[-1], Completed)
    assert [(a.attempt, a.outcome, a.error_code, a.status) for a in attempts] == [
        (1, "retrying", "upstream_rate_limited", 429),
        (2, "retrying", "upstream_unavailable", 500),
        (3, "ok", None, None),
    ]
    assert [a.delay for a in attempts] == [*sleeps, None]


async def test_retry_after_shorter_than_backoff_is_ignored(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    api.post("/chat/completions").mock(side_effect=[error(429, **{"retry-after-ms": "200"}), ok()])
    await collect(llm, request())
    assert 1.0 <= sleeps[0] <= 1.0 + JITTER


async def test_retry_after_is_capped_at_backoff_max(
    api: respx.MockRouter, sleeps: list[float]
) -> None:
    async def record(delay: float) -> None:
        sleeps.append(delay)

    client = LLMClient(
        base_url=BASE_URL, platform_api_key=PLATFORM_KEY, backoff_max=10.0, sleep=record
    )
    api.post("/chat/completions").mock(side_effect=[error(503, **{"retry-after": "120"}), ok()])
    try:
        await collect(client, request())
    finally:
        await client.aclose()
    assert sleeps == [pytest.approx(10.0)]


async def test_timeouts_are_retried(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(
        side_effect=[httpx.ReadTimeout("read timed out"), httpx.ConnectTimeout("slow"), ok()]
    )
    events = await collect(llm, request())
    assert route.call_count == 3
    assert [e.error_code for e in events if isinstance(e, Retrying)] == [
        "upstream_timeout",
        "upstream_timeout",
    ]
    assert len(sleeps) == 2
    assert text_of(events) == "Hello"


async def test_connection_errors_are_retried(llm: LLMClient, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(side_effect=[httpx.ConnectError("refused"), ok()])
    events = await collect(llm, request())
    assert [e.error_code for e in events if isinstance(e, Retrying)] == [
        "upstream_connection_error"
    ]


async def test_four_failures_raise_upstream_unavailable(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(
        side_effect=[error(500), error(502), error(503), error(500)]
    )
    with capture_logs() as logs:
        err = await failure(llm, request())

    assert err.error_code == "upstream_unavailable"
    assert err.transient is True
    assert err.attempts == 4
    assert err.status == 500
    assert route.call_count == 4
    assert len(sleeps) == 3
    for got, base in zip(sleeps, (1.0, 2.0, 4.0), strict=True):
        assert base <= got <= base + JITTER
    attempt_logs = [e for e in logs if e["event"] == "llm.attempt"]
    assert [e["outcome"] for e in attempt_logs] == ["retrying"] * 3 + ["failed"]
    assert [e["attempt"] for e in attempt_logs] == [1, 2, 3, 4]
    assert attempt_logs[-1]["error_code"] == "upstream_unavailable"
    assert attempt_logs[-1]["delay"] is None


async def test_final_error_code_is_the_last_errors(llm: LLMClient, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(side_effect=[error(500), error(500), error(500), error(429)])
    err = await failure(llm, request())
    assert err.error_code == "upstream_rate_limited"
    assert err.attempts == 4
    assert err.transient is True


async def test_timeouts_exhausted(llm: LLMClient, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(side_effect=httpx.ReadTimeout("read timed out"))
    err = await failure(llm, request())
    assert err.error_code == "upstream_timeout"
    assert err.attempts == 4


async def test_max_retries_zero_means_one_attempt(
    api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(return_value=error(503))
    client = LLMClient(base_url=BASE_URL, platform_api_key=PLATFORM_KEY, max_retries=0)
    try:
        err = await failure(client, request())
    finally:
        await client.aclose()
    assert (err.error_code, err.attempts, route.call_count) == ("upstream_unavailable", 1, 1)


async def test_exhausted_quota_is_not_retried(llm: LLMClient, api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(
        return_value=error(429, "You exceeded your current quota", code="insufficient_quota")
    )
    err = await failure(llm, request())
    assert err.error_code == "upstream_rate_limited"
    assert err.transient is False
    assert err.attempts == 1
    assert route.call_count == 1
    assert "quota" in err.message


# --- streams cut mid-way ------------------------------------------------------------------------


async def test_stream_cut_mid_way_emits_retrying_after_partial_text(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    cut = httpx.Response(200, content=sse(chunk("Hel"), done=False))
    route = api.post("/chat/completions").mock(side_effect=[cut, ok()])

    events = await collect(llm, request())

    assert route.call_count == 2
    assert events[0] == TextDelta("Hel")
    assert isinstance(events[1], Retrying)
    assert events[1].attempt == 2
    assert events[1].error_code == "upstream_connection_error"
    assert events[1].delay == sleeps[0]
    after_retry = events[2:]
    assert text_of(after_retry) == "Hello"
    assert isinstance(events[-1], Completed)


async def test_transport_error_while_streaming_is_retried(
    llm: LLMClient, api: respx.MockRouter
) -> None:
    broken = httpx.Response(
        200,
        stream=BrokenStream(sse(chunk("Hel"), done=False), httpx.RemoteProtocolError("cut")),
    )
    api.post("/chat/completions").mock(side_effect=[broken, ok()])
    events = await collect(llm, request())
    assert events[0] == TextDelta("Hel")
    retry = events[1]
    assert isinstance(retry, Retrying)
    assert (retry.attempt, retry.error_code) == (2, "upstream_connection_error")
    assert text_of(events[2:]) == "Hello"


async def test_read_timeout_while_streaming_is_retried(
    llm: LLMClient, api: respx.MockRouter
) -> None:
    broken = httpx.Response(
        200, stream=BrokenStream(sse(chunk("Hel"), done=False), httpx.ReadTimeout("idle"))
    )
    api.post("/chat/completions").mock(side_effect=[broken, ok()])
    events = await collect(llm, request())
    assert events[0] == TextDelta("Hel")
    assert isinstance(events[1], Retrying)
    assert events[1].error_code == "upstream_timeout"


async def test_error_event_in_stream_is_retried(llm: LLMClient, api: respx.MockRouter) -> None:
    body = sse(chunk("Hel"), {"error": {"message": "overloaded", "type": "server_error"}})
    api.post("/chat/completions").mock(side_effect=[httpx.Response(200, content=body), ok()])
    events = await collect(llm, request())
    assert isinstance(events[1], Retrying)
    assert events[1].error_code == "upstream_connection_error"


async def test_stream_cut_every_time_fails_transiently(
    llm: LLMClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(
        side_effect=lambda _: httpx.Response(200, content=sse(chunk("Hel"), done=False))
    )
    err = await failure(llm, request())
    assert (err.error_code, err.transient, err.attempts) == ("upstream_connection_error", True, 4)


# --- permanent errors ---------------------------------------------------------------------------


async def test_401_fails_at_once_without_the_key(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    route = api.post("/chat/completions").mock(
        return_value=error(401, f"Incorrect API key provided: {USER_KEY}", code="invalid_api_key")
    )
    with capture_logs() as logs:
        err = await failure(llm, request(api_key=USER_KEY))

    assert err.error_code == "invalid_api_key"
    assert err.message == (
        "The API key was rejected by the model provider; update the key in the deployment's "
        "configuration."
    )
    assert err.transient is False
    assert err.attempts == 1
    assert err.status == 401
    assert route.call_count == 1
    assert sleeps == []
    assert err.__cause__ is None
    assert err.__suppress_context__ is True
    assert err.detail is not None
    assert "Incorrect API key provided" in err.detail
    assert_no_key(err, repr(err), err.message, err.detail, logs)
    assert [e["outcome"] for e in logs if e["event"] == "llm.attempt"] == ["failed"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "upstream_bad_request"),
        (422, "upstream_bad_request"),
        (403, "upstream_forbidden"),
        (404, "model_not_found"),
    ],
)
async def test_permanent_errors_fail_at_once(
    llm: LLMClient, api: respx.MockRouter, sleeps: list[float], status: int, code: str
) -> None:
    route = api.post("/chat/completions").mock(return_value=error(status, "nope"))
    events, err = await run_until_error(llm, request())
    assert err is not None
    assert err.error_code == code
    assert err.transient is False
    assert err.attempts == 1
    assert err.status == status
    assert err.detail == "nope"
    assert route.call_count == 1
    assert sleeps == []
    assert events == []


async def test_model_not_found_names_the_model(llm: LLMClient, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(return_value=error(404, "The model does not exist"))
    err = await failure(llm, request())
    assert err.error_code == "model_not_found"
    assert "'gpt-test'" in err.message


# --- logging ------------------------------------------------------------------------------------


async def test_every_attempt_is_logged_without_the_key(
    llm: LLMClient, api: respx.MockRouter
) -> None:
    cut = httpx.Response(200, content=sse(chunk("Hel"), done=False))
    api.post("/chat/completions").mock(
        side_effect=[error(429, f"limit for {USER_KEY}"), httpx.ConnectError(USER_KEY), cut, ok()]
    )
    with capture_logs() as logs:
        await collect(llm, request(api_key=USER_KEY))

    attempt_logs = [e for e in logs if e["event"] == "llm.attempt"]
    assert len(attempt_logs) == 4
    assert [e["attempt"] for e in attempt_logs] == [1, 2, 3, 4]
    assert [e["outcome"] for e in attempt_logs] == ["retrying", "retrying", "retrying", "ok"]
    assert [e["error_code"] for e in attempt_logs] == [
        "upstream_rate_limited",
        "upstream_connection_error",
        "upstream_connection_error",
        None,
    ]
    assert [e["status"] for e in attempt_logs] == [429, None, None, None]
    assert all(isinstance(e["delay"], float) for e in attempt_logs[:3])
    assert attempt_logs[3]["delay"] is None
    assert all({"attempt", "outcome", "error_code", "delay", "status"} <= e.keys() for e in logs)
    assert_no_key(logs)


async def test_every_attempt_is_counted_by_outcome(llm: LLMClient, api: respx.MockRouter) -> None:
    def counted(outcome: str) -> float:
        value = REGISTRY.get_sample_value("agent_model_attempts_total", {"outcome": outcome})
        return value or 0.0

    before = {outcome: counted(outcome) for outcome in ("ok", "retrying", "failed")}
    api.post("/chat/completions").mock(side_effect=[error(503, "busy"), ok(), error(401, "no")])
    await collect(llm, request())
    await failure(llm, request())
    assert {outcome: counted(outcome) - before[outcome] for outcome in before} == {
        "ok": 1,
        "retrying": 1,
        "failed": 1,
    }


async def test_consumer_closing_early_is_logged_and_leaks_nothing(
    llm: LLMClient, api: respx.MockRouter
) -> None:
    api.post("/chat/completions").mock(return_value=ok("a", "b", "c"))
    attempts: list[AttemptInfo] = []
    with capture_logs() as logs:
        async with contextlib.aclosing(llm.stream(request(), on_attempt=attempts.append)) as it:
            async for event in it:
                assert event == TextDelta("a")
                break
    assert [a.outcome for a in attempts] == ["cancelled"]
    assert [e["outcome"] for e in logs if e["event"] == "llm.attempt"] == ["cancelled"]


# --- lifecycle ----------------------------------------------------------------------------------


async def test_shared_http_client_is_used_and_left_open(api: respx.MockRouter) -> None:
    route = api.post("/chat/completions").mock(return_value=ok())
    async with httpx.AsyncClient() as shared:
        client = LLMClient(base_url=BASE_URL, platform_api_key=PLATFORM_KEY, http_client=shared)
        await collect(client, request())
        await collect(client, request(api_key=USER_KEY))
        assert all(c._client is shared for c in client._clients.values())
        await client.aclose()
        assert not shared.is_closed
    assert route.call_count == 2


async def test_own_http_client_is_closed(api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(return_value=ok())
    client = LLMClient(base_url=BASE_URL, platform_api_key=PLATFORM_KEY)
    await collect(client, request())
    pool = client._http_client
    assert pool is not None
    await client.aclose()
    assert pool.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await collect(client, request())


# --- Retry-After parsing ------------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after": "1.5"})) == 1.5
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    date = "Wed, 01 Jan 2025 12:00:07 GMT"
    assert parse_retry_after(httpx.Headers({"retry-after": date}), now=now) == 7.0
    past = "Wed, 01 Jan 2025 11:00:00 GMT"
    assert parse_retry_after(httpx.Headers({"retry-after": past}), now=now) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({"retry-after": "inf"})) is None
    assert parse_retry_after(httpx.Headers()) is None


async def test_closing_after_completed_logs_one_line(llm: LLMClient, api: respx.MockRouter) -> None:
    api.post("/chat/completions").mock(return_value=ok())
    with capture_logs() as logs:
        async with contextlib.aclosing(llm.stream(request())) as it:
            async for event in it:
                if isinstance(event, Completed):
                    break
    assert [e["outcome"] for e in logs if e["event"] == "llm.attempt"] == ["ok"]


async def test_cancelled_during_backoff_logs_no_extra_line(
    api: respx.MockRouter,
) -> None:
    async def never(_: float) -> None:
        raise asyncio.CancelledError

    api.post("/chat/completions").mock(side_effect=[error(503), ok()])
    client = LLMClient(base_url=BASE_URL, platform_api_key=PLATFORM_KEY, sleep=never)
    try:
        with capture_logs() as logs, pytest.raises(asyncio.CancelledError):
            await collect(client, request())
    finally:
        await client.aclose()
    assert [e["outcome"] for e in logs if e["event"] == "llm.attempt"] == ["retrying"]
