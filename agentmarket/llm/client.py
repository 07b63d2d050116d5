"""Streaming chat completions with retries (docs/operations.md#model-calls-and-retries).

`LLMClient.stream` calls an OpenAI-compatible `chat.completions` endpoint with `stream=True` and
yields `TextDelta`s, then one `Completed` carrying the token usage. Transient failures (timeouts,
connection errors, a stream cut before its final chunk, 429, 5xx, 408/409) are retried with
tenacity: exponential backoff `backoff_base * 2**n` (1 s, 2 s, 4 s by default) plus up to `jitter`
seconds, or the provider's `Retry-After` when that is longer (capped at `backoff_max`). The SDK's
own retries are off (`max_retries=0`) so attempts do not multiply. A retry may come after text was
already relayed: a `Retrying` event is yielded first so the caller can discard the partial text.
Permanent failures (400/401/403/404/422) raise `LLMError` at once. Every attempt is logged as
`llm.attempt`; no API key ever reaches a log line, an event or an error message.

With a `FallbackModel`, a request on the platform key whose retries are exhausted on a transient
failure is sent to the fallback model (its own base URL and key, the same retries): a
`FallingBack` event comes first, so the caller starts the reply over, and the `Completed` event
names the model that answered. A request on a user's own key never falls back: the key is never
sent anywhere else (docs/operations.md#the-fallback-model).

The SDK sends the request (auth, base URL, timeouts, HTTP errors), but the streamed body is read
here: its SSE events are split by `agentmarket.llm.sse.SSEDecoder` and each chunk is decoded with
orjson into a dict, with no pydantic model per chunk (docs/benchmarks.md). A response that is not
`text/event-stream`, or `LLMClient(fast_stream=False)`, keeps the SDK's own chunk parsing.
`http_backend="aiohttp"` sends the SDK's requests through aiohttp (`openai.DefaultAioHttpClient`,
errors mapped to httpx's, so the classification below is the same); the worker uses it
(OPENAI_HTTP_BACKEND) because it costs about half the CPU per streamed read.

Consumers that stop early (a cancelled reply) should close the iterator, e.g. with
`contextlib.aclosing(client.stream(...))`, so the HTTP response is released at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, cast

import aiohttp
import httpx
import openai
import orjson
import structlog
from openai.types.chat import ChatCompletionChunk
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from agentmarket.core import metrics, sentry
from agentmarket.llm.hold import StreamHold
from agentmarket.llm.sse import SSEDecoder

__all__ = [
    "HTTP_BACKENDS",
    "MAX_CACHED_CLIENTS",
    "MAX_DETAIL_CHARS",
    "AttemptInfo",
    "Completed",
    "CompletionRequest",
    "FallbackModel",
    "FallingBack",
    "HttpBackend",
    "LLMClient",
    "LLMError",
    "Retrying",
    "StreamEvent",
    "TextDelta",
    "TokenUsage",
    "parse_retry_after",
]

log = structlog.get_logger("agentmarket.llm")

# Distinct API keys whose SDK clients are kept; they share one connection pool, so evicting one
# releases nothing and needs no close.
MAX_CACHED_CLIENTS: Final = 32
# The SDK's HTTP transports: httpx's own, or aiohttp's through the SDK's `DefaultAioHttpClient`.
HttpBackend = Literal["httpx", "aiohttp"]
HTTP_BACKENDS: Final[tuple[HttpBackend, ...]] = ("httpx", "aiohttp")
# Longest provider text kept on an LLMError (`detail`).
MAX_DETAIL_CHARS: Final = 500

_KEY_LIKE = re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-*.•…]{6,}")


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}]
    temperature: float | None = None
    max_tokens: int | None = None
    api_key: str | None = None  # the user's own key; None = the platform key

    def __repr__(self) -> str:  # never print the key
        return (
            f"CompletionRequest(model={self.model!r}, messages=<{len(self.messages)}>, "
            f"temperature={self.temperature!r}, max_tokens={self.max_tokens!r}, "
            f"api_key={'<set>' if self.api_key else None})"
        )


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Retrying:
    """Attempt `attempt` starts after `delay` seconds; discard any text relayed so far."""

    attempt: int  # the number of the attempt about to start (2, 3, …)
    delay: float
    error_code: str  # why the previous attempt failed


@dataclass(frozen=True)
class Completed:
    usage: TokenUsage | None  # None when the provider sent no usage chunk
    model: str  # the model that answered, as reported by the provider
    finish_reason: str | None


@dataclass(frozen=True)
class FallingBack:
    """The primary model failed after its retries; the reply starts over from the fallback
    `model`: discard any text relayed so far."""

    model: str
    error_code: str  # why the primary failed


@dataclass(frozen=True)
class FallbackModel:
    """Where a platform-key reply goes when the primary model keeps failing (OPENAI_FALLBACK_*)."""

    model: str
    base_url: str | None
    api_key: str = field(repr=False)


StreamEvent = TextDelta | Retrying | FallingBack | Completed


@dataclass(frozen=True)
class AttemptInfo:
    """One finished attempt, for metrics. `started_at` is `time.monotonic()`."""

    attempt: int
    started_at: float
    outcome: str  # "ok" | "retrying" | "failed" | "cancelled" | "error"
    error_code: str | None
    delay: float | None  # the backoff before the next attempt (outcome "retrying")
    status: int | None = None  # the provider's HTTP status, when it answered with an error
    duration: float = 0.0  # seconds


class LLMError(Exception):
    """The model call failed; stored on the failed assistant message (not an HTTP error)."""

    def __init__(
        self,
        error_code: str,
        message: str,
        *,
        transient: bool,
        attempts: int,
        status: int | None = None,
        retry_after: float | None = None,
        detail: str | None = None,
        account_refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.transient = transient
        self.attempts = attempts
        self.status = status
        self.retry_after = retry_after  # seconds the provider asked us to wait
        self.detail = detail  # the provider's own message, keys removed, truncated
        # The provider refused the key or its account (401, 403, an exhausted quota): retrying
        # or waiting does not help, only another key or the account's owner does.
        self.account_refused = account_refused

    def __repr__(self) -> str:
        return (
            f"LLMError(error_code={self.error_code!r}, message={self.message!r}, "
            f"transient={self.transient!r}, attempts={self.attempts!r}, status={self.status!r})"
        )


class _StreamCut(Exception):
    """The stream ended before a chunk carrying finish_reason."""


_RETRYABLE_STATUS: Final = {408: "upstream_timeout", 409: "upstream_unavailable"}

_MESSAGES: Final = {
    "no_api_key": (
        "No API key is configured for this deployment; add the model provider's API key to the "
        "deployment's configuration."
    ),
    "invalid_api_key": (
        "The API key was rejected by the model provider; update the key in the deployment's "
        "configuration."
    ),
    "upstream_forbidden": (
        "The model provider refused this API key access to the request; check the key's "
        "permissions, organization and project, or use another key."
    ),
    "upstream_bad_request": (
        "The model provider rejected the request as invalid; check the deployment's model and "
        "parameters (temperature, max tokens) or shorten the conversation."
    ),
    "upstream_rate_limited": (
        "The model provider is rate limiting this API key; wait a minute and try again, or raise "
        "the key's rate limits."
    ),
    "insufficient_quota": (
        "The model provider reports that this API key has exceeded its quota; check the account's "
        "plan and billing details."
    ),
    "upstream_unavailable": "The model provider is temporarily unavailable; try again in a minute.",
    "upstream_timeout": "The model provider did not answer in time; try again in a minute.",
    "upstream_connection_error": (
        "The connection to the model provider failed or was cut off; try again in a minute."
    ),
}


def _model_not_found_message(model: str) -> str:
    return (
        f"The model {model!r} does not exist or this API key cannot use it; choose another model "
        "in the deployment's configuration."
    )


def _sanitize(text: str | None, secret: str) -> str | None:
    if not text:
        return None
    if secret:
        text = text.replace(secret, "[redacted]")
    text = _KEY_LIKE.sub("[redacted]", text)
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 1] + "…"
    return text


def parse_retry_after(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date; else None."""
    value: float | None = None
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            value = float(ms) / 1000
    if value is None:
        raw = headers.get("retry-after")
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            value = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(value):
        return None
    return max(value, 0.0)


def _provider_message(exc: openai.APIStatusError) -> str:
    """The provider's own error text (`{"error": {"message": …}}`), else the SDK's summary."""
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
    return exc.message


def _status_error(
    exc: openai.APIStatusError, request: CompletionRequest, key: str, attempt: int
) -> LLMError:
    status = exc.status_code
    detail = _sanitize(_provider_message(exc), key)
    code: str
    transient = False
    if status == 401:
        code = "invalid_api_key"
    elif status == 403:
        code = "upstream_forbidden"
    elif status == 404:
        code = "model_not_found"
    elif status == 429:
        code = "upstream_rate_limited"
        # An exhausted quota does not come back in seconds: retrying only delays the answer.
        transient = exc.code != "insufficient_quota"
    elif status >= 500:
        code, transient = "upstream_unavailable", True
    elif status in _RETRYABLE_STATUS:
        code, transient = _RETRYABLE_STATUS[status], True
    else:  # 400, 422 and any other 4xx
        code = "upstream_bad_request"
    if code == "model_not_found":
        message = _model_not_found_message(request.model)
    elif code == "upstream_rate_limited" and not transient:
        message = _MESSAGES["insufficient_quota"]
    else:
        message = _MESSAGES[code]
    return LLMError(
        code,
        message,
        transient=transient,
        attempts=attempt,
        status=status,
        retry_after=parse_retry_after(exc.response.headers) if transient else None,
        detail=detail,
        account_refused=status in (401, 403) or (status == 429 and not transient),
    )


def _classify(exc: BaseException, request: CompletionRequest, key: str, attempt: int) -> LLMError:
    """Map an SDK/transport failure onto a stable error code (no key in anything kept)."""
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, request, key, attempt)
    timed_out = isinstance(exc, openai.APITimeoutError | httpx.TimeoutException)
    if timed_out and not _aiohttp_refusal(exc):
        code = "upstream_timeout"
    else:
        # APIConnectionError, a transport error while reading the stream, an `error` event in the
        # stream (a plain APIError), or a stream that ended before its final chunk.
        code = "upstream_connection_error"
    detail = _sanitize(str(exc), key) if not isinstance(exc, _StreamCut) else None
    return LLMError(code, _MESSAGES[code], transient=True, attempts=attempt, detail=detail)


def _aiohttp_refusal(exc: BaseException) -> bool:
    """httpx-aiohttp maps every aiohttp connection error (a refused connection, a server that hung
    up) to httpx's ConnectTimeout; the aiohttp error under it says whether time ran out."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientError):
            return not isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError)
        cause = cause.__cause__
    return False


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, LLMError) and exc.transient


class _Backoff(wait_base):
    """Exponential backoff plus jitter, or the provider's Retry-After when that is longer."""

    def __init__(self, *, base: float, maximum: float, jitter: float) -> None:
        self._wait = wait_exponential(multiplier=base, max=maximum) + wait_random(0, jitter)
        self._maximum = maximum

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self._wait(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, LLMError) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self._maximum))
        return delay


class _AttemptLog:
    """The attempts of one `LLMClient.stream` call: each gets one `llm.attempt` log line and one
    `on_attempt` call, when it succeeds, is retried, or ends the call."""

    def __init__(self, model: str, on_attempt: Callable[[AttemptInfo], None] | None) -> None:
        self._model = model
        self._on_attempt = on_attempt
        self.number = 0  # the current attempt's number (0 before the first)
        self.error: LLMError | None = None  # why the current attempt failed, if it did
        self._started = time.monotonic()
        self._unreported = False  # the current attempt has no llm.attempt line yet

    def start(self, number: int) -> None:
        self.number = number
        self._started = time.monotonic()
        self.error = None
        self._unreported = True

    def succeeded(self) -> None:
        self._report("ok")
        self._unreported = False

    def failed(self, error: LLMError) -> LLMError:
        self.error = error
        return error

    def retrying(self, next_number: int, delay: float) -> Retrying:
        """Report the failed attempt as retried; the event announcing attempt `next_number`."""
        error = self.error
        assert error is not None
        self._report("retrying", error, delay)
        self._unreported = False
        return Retrying(next_number, delay, error.error_code)

    def ended(self, outcome: str, error: LLMError | None) -> None:
        """The call ends with an exception: report the current attempt unless it already was."""
        if self._unreported:
            self._report(outcome, error)

    def _report(
        self, outcome: str, error: LLMError | None = None, delay: float | None = None
    ) -> None:
        duration = time.monotonic() - self._started
        status = error.status if error is not None else None
        code = error.error_code if error is not None else None
        log_method = log.info if outcome in ("ok", "cancelled") else log.warning
        log_method(
            "llm.attempt",
            attempt=self.number,
            outcome=outcome,
            error_code=code,
            delay=round(delay, 3) if delay is not None else None,
            status=status,
            model=self._model,
            duration_ms=round(duration * 1000),
        )
        metrics.MODEL_ATTEMPTS.labels(outcome=outcome).inc()
        sentry.record_span(
            "gen_ai.attempt",
            f"attempt {self.number}",
            duration=duration,
            data={"outcome": outcome, "error_code": code, "status": status},
        )
        if self._on_attempt is not None:
            self._on_attempt(
                AttemptInfo(self.number, self._started, outcome, code, delay, status, duration)
            )


_CAUGHT: Final = (openai.APIError, httpx.RequestError, _StreamCut)


class LLMClient:
    """One per process: SDK clients per API key over one shared connection pool."""

    def __init__(
        self,
        *,
        base_url: str | None,
        platform_api_key: str | None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_retries: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        jitter: float = 0.1,
        http_client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        fast_stream: bool = True,
        http_backend: HttpBackend = "httpx",
        fallback: FallbackModel | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._base_url = base_url
        self._platform_api_key = platform_api_key or None
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._max_retries = max_retries
        self._backoff = _Backoff(base=backoff_base, maximum=backoff_max, jitter=jitter)
        self._sleep = sleep
        # Parse the SSE body here rather than through the SDK's per-chunk models (the SDK still
        # sends the request); False keeps the SDK's parsing for a provider that needs it.
        self._fast_stream = fast_stream
        if http_backend not in HTTP_BACKENDS:
            raise ValueError(f"http_backend must be one of {', '.join(HTTP_BACKENDS)}")
        self._http_backend = http_backend
        # A client passed in belongs to the caller (not closed here); otherwise one is made lazily.
        self._http_client = http_client
        self._owns_http_client = http_client is None
        self._clients: OrderedDict[str, openai.AsyncOpenAI] = OrderedDict()
        self._fallback = fallback
        self._closed = False

    def _http(self) -> httpx.AsyncClient:
        if self._http_client is None:
            if self._http_backend == "aiohttp":
                # The SDK's aiohttp transport (openai[aiohttp]): the same httpx interface, errors
                # mapped to httpx's, but about half the CPU per streamed read (docs/benchmarks.md).
                self._http_client = openai.DefaultAioHttpClient(timeout=self._timeout)
            else:
                self._http_client = openai.DefaultAsyncHttpxClient(timeout=self._timeout)
        return self._http_client

    def _client_for(self, key: str, base_url: str | None = None) -> openai.AsyncOpenAI:
        """The SDK client for `key` at `base_url` (the primary's by default; the fallback model
        passes its own), cached by both: a key is only ever sent where it was configured."""
        if self._closed:
            raise RuntimeError("LLMClient is closed")
        base_url = base_url if base_url is not None else self._base_url
        digest = hashlib.sha256(f"{base_url or ''}\n{key}".encode()).hexdigest()
        client = self._clients.get(digest)
        if client is None:
            client = openai.AsyncOpenAI(
                api_key=key,
                base_url=base_url,
                timeout=self._timeout,
                max_retries=0,
                http_client=self._http(),
            )
            self._clients[digest] = client
            while len(self._clients) > MAX_CACHED_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(digest)
        return client

    async def aclose(self) -> None:
        """Drop the SDK clients and close the connection pool if this object made it."""
        self._closed = True
        self._clients.clear()
        if self._owns_http_client and self._http_client is not None:
            await self._http_client.aclose()
            self._http_client = None

    async def stream(
        self,
        request: CompletionRequest,
        *,
        on_attempt: Callable[[AttemptInfo], None] | None = None,
        hold: StreamHold | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield the reply as it streams; raise LLMError once retries are exhausted or pointless
        (and, on the platform key, the fallback model failed too or there is none). `hold`
        follows each attempt's connection, so that the caller can stop its reading while it
        waits (agentmarket.llm.hold)."""
        key = request.api_key or self._platform_api_key
        if not key:
            raise LLMError("no_api_key", _MESSAGES["no_api_key"], transient=False, attempts=0)
        fallback = self._fallback if request.api_key is None else None
        try:
            async with contextlib.aclosing(
                self._call(self._client_for(key), key, request, on_attempt, hold)
            ) as events:
                async for event in events:
                    yield event
            return
        except LLMError as exc:
            if fallback is None or not exc.transient:
                raise
            primary_error = exc
        # The primary gave up on a transient failure: the reply starts over on the fallback.
        log.warning(
            "llm.fallback",
            model=request.model,
            fallback_model=fallback.model,
            error_code=primary_error.error_code,
            attempts=primary_error.attempts,
        )
        yield FallingBack(fallback.model, primary_error.error_code)
        outcome = "cancelled"
        try:
            async with contextlib.aclosing(
                self._call(
                    self._client_for(fallback.api_key, fallback.base_url),
                    fallback.api_key,
                    replace(request, model=fallback.model),
                    on_attempt,
                    hold,
                )
            ) as events:
                async for event in events:
                    yield event
            outcome = "ok"
        except LLMError as exc:
            outcome = "failed"
            log.warning(
                "llm.fallback_failed", fallback_model=fallback.model, error_code=exc.error_code
            )
            # The user hears why the primary failed (the provider is unavailable), not about
            # the fallback's own configuration.
            raise LLMError(
                primary_error.error_code,
                primary_error.message,
                transient=True,
                attempts=primary_error.attempts + exc.attempts,
                status=primary_error.status,
                detail=primary_error.detail,
            ) from None
        except Exception:
            outcome = "error"
            raise
        finally:
            metrics.MODEL_FALLBACKS.labels(outcome=outcome).inc()

    async def _call(
        self,
        client: openai.AsyncOpenAI,
        key: str,
        request: CompletionRequest,
        on_attempt: Callable[[AttemptInfo], None] | None,
        hold: StreamHold | None = None,
    ) -> AsyncGenerator[TextDelta | Retrying | Completed, None]:
        """One model's attempts: the request with its retries, through `client`."""
        attempts = _AttemptLog(request.model, on_attempt)

        # tenacity decides whether and how long to wait; the wait itself happens here, after the
        # Retrying event, so the caller hears about a retry before the pause rather than after it.
        pending_delays: list[float] = []

        async def defer_sleep(delay: float) -> None:
            pending_delays.append(delay)

        retrying = AsyncRetrying(
            sleep=defer_sleep,
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._backoff,
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                if pending_delays:
                    delay = pending_delays.pop()
                    yield attempts.retrying(attempt.retry_state.attempt_number, delay)
                    await self._sleep(delay)
                attempts.start(attempt.retry_state.attempt_number)
                try:
                    async with contextlib.aclosing(self._attempt(client, request, hold)) as events:
                        async for event in events:
                            if isinstance(event, Completed):
                                attempts.succeeded()
                            yield event
                    return
                except _CAUGHT as exc:
                    error = attempts.failed(_classify(exc, request, key, attempts.number))
                # Hand the failure to tenacity, which retries, or re-raises it (reraise=True).
                # The SDK exception is not chained: its text or request could carry the key.
                with attempt:
                    raise error from None
        except LLMError as exc:
            attempts.ended("failed", exc)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            # The consumer stopped (a cancelled reply) or the task was cancelled.
            attempts.ended("cancelled", attempts.error)
            raise
        except Exception:
            attempts.ended("error", attempts.error)
            raise

    async def _attempt(
        self, client: openai.AsyncOpenAI, request: CompletionRequest, hold: StreamHold | None
    ) -> AsyncGenerator[TextDelta | Completed, None]:
        reply = _Reply(request.model)
        if self._fast_stream:
            chunks = self._raw_chunks(client, request, reply, hold)
        else:
            stream = await client.chat.completions.create(**_request_body(request))
            chunks = _sdk_chunks(cast("openai.AsyncStream[ChatCompletionChunk]", stream), reply)
        async with contextlib.aclosing(chunks) as texts:
            async for text in texts:
                yield TextDelta(text)
        if reply.finish_reason is None:
            raise _StreamCut("the stream ended before its final chunk")
        yield Completed(usage=reply.usage, model=reply.model, finish_reason=reply.finish_reason)

    async def _raw_chunks(
        self,
        client: openai.AsyncOpenAI,
        request: CompletionRequest,
        reply: _Reply,
        hold: StreamHold | None,
    ) -> AsyncGenerator[str, None]:
        """The SDK sends the request (auth, base URL, errors, timeouts); the SSE body is parsed
        here. `client.post` with `cast_to=httpx.Response` (the SDK's documented call for a raw
        response) takes the JSON body as it is: `chat.completions.create` first walks every
        message through the SDK's typed-params transform, which changes nothing here and was half
        the worker's CPU per reply with a 20-turn history (docs/benchmarks.md)."""
        response = cast(
            "httpx.Response",
            await client.post(
                "/chat/completions",
                cast_to=httpx.Response,
                body=_request_body(request),
                stream=True,
                stream_cls=openai.AsyncStream[Any],
            ),
        )
        if hold is not None:
            hold.attach(response)
        try:
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                chunks = _fast_chunks(response, reply)
            else:  # not SSE as announced: leave the body to the SDK, as before
                stream = openai.AsyncStream(
                    cast_to=ChatCompletionChunk, response=response, client=client
                )
                chunks = _sdk_chunks(stream, reply)
            async with contextlib.aclosing(chunks) as texts:
                async for text in texts:
                    yield text
        finally:
            if hold is not None:
                hold.detach()
            await response.aclose()


def _request_body(request: CompletionRequest) -> dict[str, Any]:
    """The request's JSON body: sent as is by the fast path (`client.post`), and the keyword
    arguments of `chat.completions.create` on the SDK's path (an absent key is the SDK's `omit`)."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_completion_tokens"] = request.max_tokens
    return body


class _Reply:
    """What one attempt learned besides its text: the model, the usage and the finish reason."""

    __slots__ = ("finish_reason", "model", "usage")

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    def take(self, chunk: object, http_request: httpx.Request) -> str | None:
        """Record one decoded chunk (a dict from the JSON); its text for choice 0, if any.

        Mirrors the SDK: a chunk with a truthy `error` raises the `openai.APIError` the SDK
        raises for it."""
        if not isinstance(chunk, dict):
            return None
        error = chunk.get("error")
        if error:
            raise _stream_error(error, http_request)
        model = chunk.get("model")
        if model and isinstance(model, str):
            self.model = model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = TokenUsage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        text: str | None = None
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if content and isinstance(content, str):
                text = content if text is None else text + content
            finish = choice.get("finish_reason")
            if finish and isinstance(finish, str):
                self.finish_reason = finish
        return text


def _stream_error(error: object, http_request: httpx.Request) -> openai.APIError:
    """The SDK's exception for an `{"error": …}` event in the stream (openai._streaming)."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=http_request, body=error)


async def _fast_chunks(response: httpx.Response, reply: _Reply) -> AsyncGenerator[str, None]:
    """The text of the SSE chunks, decoded with orjson; no model object per chunk. The chunks
    that one network read completes come out as one piece of text, so a reader that lets the
    tokens gather (workers.relay.Relay.read_delay) handles them once, not one by one."""
    decoder = SSEDecoder()
    http_request = response.request
    async for data in response.aiter_bytes():
        text, ended, error = _read_chunks(decoder.feed(data), reply, http_request)
        if text:
            yield text
        if error is not None:
            raise error
        if ended:
            return
    text, _, error = _read_chunks(decoder.finish(), reply, http_request)
    if text:
        yield text
    if error is not None:
        raise error


def _read_chunks(
    payloads: list[bytes], reply: _Reply, http_request: httpx.Request
) -> tuple[str, bool, Exception | None]:
    """The joined text of `payloads` up to the first `[DONE]` (then ended) or error chunk (the
    text before it, and the error to raise after it)."""
    texts: list[str] = []
    take = reply.take
    loads = orjson.loads
    for payload in payloads:
        if payload.startswith(b"[DONE]"):
            return "".join(texts), True, None
        try:
            text = take(loads(payload), http_request)
        except Exception as exc:  # an error chunk (openai.APIError) or bad JSON: raised after
            return "".join(texts), False, exc
        if text is not None:
            texts.append(text)
    return texts[0] if len(texts) == 1 else "".join(texts), False, None


async def _sdk_chunks(
    stream: openai.AsyncStream[ChatCompletionChunk], reply: _Reply
) -> AsyncGenerator[str, None]:
    """The SDK's own parsing (a pydantic model per chunk): for providers the fast path cannot
    read, and with `LLMClient(fast_stream=False)`."""
    async with stream:
        async for chunk in stream:
            if chunk.model:
                reply.model = chunk.model
            if chunk.usage is not None:
                reply.usage = TokenUsage(
                    prompt_tokens=chunk.usage.prompt_tokens,
                    completion_tokens=chunk.usage.completion_tokens,
                )
            for choice in chunk.choices or ():
                if choice.index != 0:
                    continue
                delta = choice.delta
                if delta is not None and delta.content:
                    yield delta.content
                if choice.finish_reason:
                    reply.finish_reason = choice.finish_reason
