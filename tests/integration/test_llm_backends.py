"""Both HTTP transports under the SDK (`http_backend="httpx"` and `"aiohttp"`) against the real
offline model over a socket: every fault it can inject ends the same way through each, so the
worker's default (aiohttp, OPENAI_HTTP_BACKEND) keeps the retry and error contract that the
respx-based unit tests pin down on httpx."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from agentmarket.llm.client import (
    HTTP_BACKENDS,
    Completed,
    CompletionRequest,
    HttpBackend,
    LLMClient,
    LLMError,
    Retrying,
    StreamEvent,
    TextDelta,
)
from agentmarket.llm.hold import StreamHold
from tests.procs import free_port

REJECTED_KEY = "sk-rejected-key-000000000000"
GOOD_KEY = "sk-good-key-0000000000000000"


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    port = free_port()
    code = (
        "from agentmarket.devtools.offline_model import OfflineModelConfig, serve; "
        f"serve('127.0.0.1', {port}, OfflineModelConfig(hang_seconds=5, cut_after_tokens=3, "
        f"reject_key={REJECTED_KEY!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/_offline/health").is_success:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the offline model did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _no_sleep(_seconds: float) -> None:
    return None


@contextlib.asynccontextmanager
async def _client(base_url: str, backend: HttpBackend) -> AsyncIterator[LLMClient]:
    llm = LLMClient(
        base_url=base_url,
        platform_api_key=GOOD_KEY,
        timeout=0.5,
        connect_timeout=0.5,
        max_retries=1,
        sleep=_no_sleep,
        http_backend=backend,
    )
    try:
        yield llm
    finally:
        await llm.aclose()


def _request(text: str, *, key: str | None = None) -> CompletionRequest:
    # A fresh conversation per call: the offline model counts fault attempts per conversation.
    content = f"{text} #{uuid.uuid4().hex[:8]}"
    return CompletionRequest(
        model="gpt-4o-mini", messages=[{"role": "user", "content": content}], api_key=key
    )


async def _outcome(llm: LLMClient, request: CompletionRequest) -> list[str]:
    """The stream as a list of labels: retries by error code, the text, and how it ended."""
    labels: list[str] = []
    text: list[str] = []
    events: AsyncIterator[StreamEvent] = llm.stream(request)
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TextDelta):
                    text.append(event.text)
                elif isinstance(event, Retrying):
                    labels.append(f"retry:{event.error_code}")
                    text.clear()
                elif isinstance(event, Completed):
                    tokens = event.usage.completion_tokens if event.usage else None
                    labels.append(f"completed:{event.finish_reason}:{tokens}")
    except LLMError as exc:
        labels.append(f"error:{exc.error_code}")
    if text:
        labels.insert(0, "".join(text).split(" #")[0])
    return labels


CASES = [
    ("hello", None, ["Echo: hello", "completed:stop:7"]),
    ("hello [[long:40]]", None, ["Echo: hello", "completed:stop:47"]),
    (
        "hi [[fault:429:0]]",
        None,
        ["Echo: hi", "retry:upstream_rate_limited", "completed:stop:7"],
    ),
    (
        "hi [[fault:503]]",
        None,
        ["Echo: hi", "retry:upstream_unavailable", "completed:stop:7"],
    ),
    ("hi [[fault:500,500]]", None, ["retry:upstream_unavailable", "error:upstream_unavailable"]),
    ("hi [[fault:cut]]", None, ["Echo: hi", "retry:upstream_connection_error", "completed:stop:7"]),
    ("hi [[fault:timeout]]", None, ["Echo: hi", "retry:upstream_timeout", "completed:stop:7"]),
    ("hi [[fault:400]]", None, ["error:upstream_bad_request"]),
    ("hi", REJECTED_KEY, ["error:invalid_api_key"]),
]


@pytest.mark.parametrize(("text", "key", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_every_fault_ends_the_same_way_through_both_transports(
    model_url: str, text: str, key: str | None, expected: list[str]
) -> None:
    results = {}
    for backend in HTTP_BACKENDS:
        async with _client(model_url, backend) as llm:
            results[backend] = await _outcome(llm, _request(text, key=key))
    assert results == {backend: expected for backend in HTTP_BACKENDS}


@pytest.mark.parametrize("backend", HTTP_BACKENDS)
async def test_a_refused_connection_is_a_retried_connection_error(backend: HttpBackend) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    async with _client(closed, backend) as llm:
        outcome = await _outcome(llm, _request("hi"))
    assert outcome == ["retry:upstream_connection_error", "error:upstream_connection_error"]


@pytest.mark.parametrize("backend", HTTP_BACKENDS)
async def test_closing_the_stream_early_releases_the_connection(
    model_url: str, backend: HttpBackend
) -> None:
    """A cancelled reply stops reading at once; the client then serves the next call."""
    async with _client(model_url, backend) as llm:
        events = llm.stream(_request("hi [[long:100000]] [[tps:200]]"))
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, TextDelta):
                    break
        assert await _outcome(llm, _request("again")) == ["Echo: again", "completed:stop:7"]


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="http_backend"):
        LLMClient(base_url=None, platform_api_key=None, http_backend="curl")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", HTTP_BACKENDS)
async def test_a_held_stream_is_not_read_until_released(
    model_url: str, backend: HttpBackend
) -> None:
    """StreamHold reaches the aiohttp backend's connection (the worker's): inside `held()` it is
    not read, and released, the stream goes on with nothing lost or repeated. On httpx there is
    nothing to hold and the stream is read as before."""
    request = _request("hold [[long:40]] [[tps:100]]")
    async with _client(model_url, backend) as llm:
        unheld = [e.text async for e in llm.stream(request) if isinstance(e, TextDelta)]
        hold = StreamHold()
        texts: list[str] = []
        states: list[bool | None] = []
        async for event in llm.stream(request, hold=hold):
            if isinstance(event, TextDelta):
                texts.append(event.text)
                if len(texts) in (1, 2):
                    with hold.held():
                        states.append(hold.reading)
                        await asyncio.sleep(0.2)  # 20 tokens arrive meanwhile
                    states.append(hold.reading)
        assert hold.reading is None  # detached at the end of the response
    assert "".join(texts) == "".join(unheld)
    if backend == "aiohttp":
        assert states == [False, True, False, True]
        assert len(texts) < len(unheld)  # what arrived during a hold came in one piece
    else:
        assert states == [None, None, None, None]
