"""The offline model (docs/operations.md#the-offline-model): OpenAI-compatible replies,
streaming, faults, timing, records.

Most tests run in-process through httpx.ASGITransport (which buffers whole responses); the ones
about what a client sees on the wire (a cut stream, a client timeout, a client that goes away) run
a real uvicorn server on a loopback port in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionUserMessageParam
from starlette.applications import Starlette

from agentmarket.devtools.offline_model import (
    DEFAULT_REJECT_KEY,
    LOREM_WORDS,
    OfflineModel,
    OfflineModelConfig,
    Outcome,
    add_arguments,
    config_from_args,
    conversation_identity,
    create_offline_model_app,
    parse_fault_spec,
    parse_outcome,
    render_reply,
    split_tokens,
)

KEY = "sk-test-offline-key-abcd1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
BASE = "http://offline"


def unique(text: str = "hello there.") -> str:
    """Text no other test sends, so each test has its own conversations (and attempt counters)."""
    return f"{text} id-{uuid.uuid4().hex[:8]}"


def model_of(app: Starlette) -> OfflineModel:
    state: OfflineModel = app.state.offline_model
    return state


@pytest.fixture
def make_app() -> Callable[..., Starlette]:
    def make(**config: Any) -> Starlette:
        return create_offline_model_app(OfflineModelConfig(**config))

    return make


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    return make_app()


@contextlib.asynccontextmanager
async def http_for(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


@contextlib.asynccontextmanager
async def sdk_for(app: Starlette, api_key: str = KEY) -> AsyncIterator[AsyncOpenAI]:
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    client = AsyncOpenAI(
        api_key=api_key, base_url=f"{BASE}/v1", http_client=http_client, max_retries=0
    )
    async with client:
        yield client


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with http_for(app) as client:
        yield client


@pytest.fixture
async def sdk(app: Starlette) -> AsyncIterator[AsyncOpenAI]:
    async with sdk_for(app) as client:
        yield client


def user(text: str) -> ChatCompletionUserMessageParam:
    return {"role": "user", "content": text}


def sse_events(body: str) -> list[str]:
    assert body.endswith("\n\n")
    events = body.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events), events
    return [e.removeprefix("data: ") for e in events]


# Real server (what a client sees on the wire)


@contextlib.contextmanager
def running_server(app: Starlette) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def real_sdk(base: str, **kwargs: Any) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=KEY, base_url=f"{base}/v1", max_retries=0, **kwargs)


async def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# Reply format


def test_reply_format_is_stable() -> None:
    system = "You are Rev, a code review assistant for Python   and SQL projects."
    messages = [
        {"role": "system", "content": system},
        user("first"),
        {"role": "assistant", "content": "ok"},
        user("second"),
        {"role": "assistant", "content": "ok"},
        user("  hello\n  there. [[tps:50]] [[fault:ok]]"),
    ]
    assert render_reply(messages) == (
        "Echo: hello there. (turn 3, 6 messages, "
        'system: "You are Rev, a code review assistant for…")'
    )
    assert render_reply([user("hi")]) == "Echo: hi (turn 1, 1 messages)"
    short = [{"role": "developer", "content": "Be brief."}, user("x")]
    assert render_reply(short) == 'Echo: x (turn 1, 2 messages, system: "Be brief.")'
    assert render_reply([{"role": "system", "content": "S"}]) == (
        'Echo: (turn 0, 1 messages, system: "S")'
    )
    parts = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert render_reply(parts) == "Echo: a b (turn 1, 1 messages)"
    assert render_reply([user("go [[long:21]]")]) == (
        "Echo: go (turn 1, 1 messages) " + " ".join([*LOREM_WORDS, "lorem", "ipsum"])
    )


def test_tokens_are_words_with_their_trailing_space() -> None:
    assert split_tokens("Echo: hi (turn 1, 1 messages)") == [
        "Echo: ",
        "hi ",
        "(turn ",
        "1, ",
        "1 ",
        "messages)",
    ]


def test_fault_spec_parsing() -> None:
    assert parse_fault_spec("429, 500,timeout,429:2.5,cut,401,400,ok,503") == (
        Outcome("429"),
        Outcome("500"),
        Outcome("timeout"),
        Outcome("429", 2.5),
        Outcome("cut"),
        Outcome("401"),
        Outcome("400"),
        Outcome("ok"),
        Outcome("503"),
    )
    assert str(parse_outcome("429:3")) == "429:3"
    assert str(parse_outcome("429")) == "429"
    for bad in ("", "418", "429:x", "429:-1", "500,"):
        with pytest.raises(ValueError, match=r"fault|number|Retry-After"):
            parse_fault_spec(bad)


def test_config_validation() -> None:
    for bad in (
        {"fault_rate": 1.5},
        {"fault_kind": "418"},
        {"latency_ms": -1},
        {"tokens_per_second": float("nan")},
        {"max_records": 0},
        {"reject_key": ""},
    ):
        with pytest.raises(ValueError):  # noqa: PT011
            OfflineModelConfig(**bad)
    config = OfflineModelConfig(model_names=("local-7b", "gpt-4o"))
    assert config.models == ("gpt-4o-mini", "gpt-4o", "local-7b")


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            *("--port", "9001", "--latency-ms", "20", "--fault-rate", "0.1"),
            *("--fault-kind", "429:2", "--model", "a", "--model", "b", "--seed", "7"),
            *("--tokens-per-second", "50"),
        ]
    )
    assert (args.host, args.port) == ("127.0.0.1", 9001)
    config = config_from_args(args)
    assert config == OfflineModelConfig(
        latency_ms=20,
        fault_rate=0.1,
        fault_kind="429:2",
        model_names=("a", "b"),
        seed=7,
        tokens_per_second=50,
    )
    assert config_from_args(parser.parse_args([])) == OfflineModelConfig()
    with pytest.raises(ValueError, match="fault_rate"):
        config_from_args(parser.parse_args(["--fault-rate", "2"]))


# Endpoints


async def test_models_list(make_app: Callable[..., Starlette]) -> None:
    async with sdk_for(make_app(model_names=("local-model",))) as sdk:
        page = await sdk.models.list()
        assert [m.id for m in page.data] == ["gpt-4o-mini", "gpt-4o", "local-model"]
        assert {m.owned_by for m in page.data} == {"agentmarket-offline"}
        assert (await sdk.models.retrieve("gpt-4o")).id == "gpt-4o"
        with pytest.raises(openai.NotFoundError):
            await sdk.models.retrieve("nope")


async def test_non_stream_reply_and_usage(sdk: AsyncOpenAI) -> None:
    text = unique("How   are you?")
    messages: list[Any] = [
        {"role": "system", "content": "You are a friendly bot."},
        user(text),
    ]
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=messages, temperature=0.2, max_tokens=100, user="u1"
    )
    reply = (
        f'Echo: {" ".join(text.split())} (turn 1, 2 messages, system: "You are a friendly bot.")'
    )
    assert completion.choices[0].message.content == reply == render_reply(messages)
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == (5 + 3) + (len(text.split()) + 3)
    assert completion.usage.completion_tokens == len(reply.split()) == len(split_tokens(reply))
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


async def test_max_tokens_cuts_the_reply(sdk: AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="gpt-4o", messages=[user(unique("a b c d e f"))], max_completion_tokens=3
    )
    assert completion.choices[0].message.content == "Echo: a b "
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_stream_with_usage(sdk: AsyncOpenAI) -> None:
    messages: list[Any] = [user(unique("stream me"))]
    reply = render_reply(messages)
    stream = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    first, *content, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert [c.choices[0].delta.content for c in content] == split_tokens(reply)
    assert all(c.choices[0].finish_reason is None for c in content)
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == len(content) == len(reply.split())
    assert usage.usage.prompt_tokens == len(messages[0]["content"].split()) + 3
    assert {c.id for c in chunks} == {first.id}
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)


async def test_stream_wire_format(http: httpx.AsyncClient) -> None:
    messages = [user(unique("wire"))]
    body = {"model": "gpt-4o-mini", "messages": messages, "stream": True}
    response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    # without include_usage: no usage chunk and no usage key
    assert all(c["choices"] and "usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == render_reply(messages)


async def test_unknown_model_is_404(sdk: AsyncOpenAI, http: httpx.AsyncClient) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.chat.completions.create(model="gpt-9", messages=[user("x")])
    assert info.value.code == "model_not_found"
    response = await http.post(
        "/v1/chat/completions", json={"model": "gpt-9", "messages": [user("x")]}, headers=AUTH
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "gpt-9" in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {DEFAULT_REJECT_KEY}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {KEY}"},
    ],
)
async def test_bad_or_missing_key_is_401(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    body = {"model": "gpt-4o-mini", "messages": [user("x")]}
    response = await http.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert (await http.get("/v1/models", headers=headers)).status_code == 401


async def test_reject_key_through_the_sdk(app: Starlette) -> None:
    async with sdk_for(app, api_key=DEFAULT_REJECT_KEY) as sdk:
        with pytest.raises(openai.AuthenticationError) as info:
            await sdk.chat.completions.create(model="gpt-4o", messages=[user("x")])
    assert info.value.code == "invalid_api_key"
    [record] = model_of(app).records()
    assert (record["outcome"], record["status"], record["attempt"]) == ("401", 401, None)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [user("x")]}, "model"),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "messages": "hi"}, "messages"),
        ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}, "messages.[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "user"}]}, "messages.[0].content"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": 5}]}, "messages.[0].content"),
        ({"model": "gpt-4o", "messages": [user("x")], "stream": "yes"}, "stream"),
        (
            {"model": "gpt-4o", "messages": [user("x")], "stream_options": {"include_usage": True}},
            "stream_options",
        ),
        ({"model": "gpt-4o", "messages": [user("x")], "temperature": 3}, "temperature"),
        ({"model": "gpt-4o", "messages": [user("x")], "max_tokens": 0}, "max_tokens"),
        ({"model": "gpt-4o", "messages": [user("x")], "user": 1}, "user"),
        ({"model": "gpt-4o", "messages": [user("x [[fault:418]]")]}, "messages"),
        ({"model": "gpt-4o", "messages": [user("x [[long:many]]")]}, "messages"),
        ({"model": "gpt-4o", "messages": [user("x [[ttft:-5]]")]}, "messages"),
        ([1, 2], None),
    ],
)
async def test_invalid_requests_are_400(
    http: httpx.AsyncClient, body: Any, param: str | None
) -> None:
    response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


async def test_unparsable_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/chat/completions", content=b"{nope", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_path_uses_openai_error_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/embeddings", json={}, headers=AUTH)
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/embeddings)"
    assert (await http.get("/v1/chat/completions", headers=AUTH)).status_code == 405


# Markers


async def test_markers_are_stripped(sdk: AsyncOpenAI) -> None:
    tag = uuid.uuid4().hex[:8]
    text = f"[[ttft:1]]keep [[tps:0]] this[[fault:ok]] [[latency:0]] {tag} [[unknown:1]]"
    completion = await sdk.chat.completions.create(model="gpt-4o", messages=[user(text)])
    content = completion.choices[0].message.content
    assert content == f"Echo: keep this {tag} [[unknown:1]] (turn 1, 1 messages)"


async def test_long_marker_adds_words(sdk: AsyncOpenAI) -> None:
    messages: list[Any] = [user(unique("go [[long:500]]"))]
    base = render_reply([user(messages[0]["content"].replace("[[long:500]]", ""))])
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    deltas = []
    usage = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            deltas.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    text = "".join(deltas)
    assert text.startswith(base + " lorem ipsum dolor")
    assert len(text.split()) == len(base.split()) + 500
    assert len(deltas) == len(base.split()) + 500
    assert usage is not None and usage.completion_tokens == len(deltas)


# Faults


async def test_fault_sequence_counts_attempts_per_conversation(
    app: Starlette, sdk: AsyncOpenAI
) -> None:
    messages: list[Any] = [user(unique("flaky [[fault:429,500,ok,503]]"))]
    other: list[Any] = [user(unique("flaky too [[fault:429,500,ok,503]]"))]

    with pytest.raises(openai.RateLimitError) as limited:
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.response.headers["retry-after-ms"] == "1000"
    assert limited.value.response.headers["x-offline-attempt"] == "1"

    # another conversation starts its own sequence
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(model="gpt-4o", messages=other)

    with pytest.raises(openai.InternalServerError) as failed:
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert failed.value.status_code == 500
    assert failed.value.type == "server_error"

    ok = await sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert ok.choices[0].message.content == render_reply(messages)

    with pytest.raises(openai.InternalServerError) as unavailable:
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert unavailable.value.status_code == 503

    for _ in range(2):  # past the end of the spec: success
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)

    identity = conversation_identity(messages)
    records = model_of(app).records(identity)
    assert [(r["attempt"], r["outcome"], r["status"]) for r in records] == [
        (1, "429", 429),
        (2, "500", 500),
        (3, "ok", 200),
        (4, "503", 503),
        (5, "ok", 200),
        (6, "ok", 200),
    ]
    [other_record] = model_of(app).records(conversation_identity(other))
    assert (other_record["attempt"], other_record["outcome"]) == (1, "429")


async def test_rate_limit_with_custom_retry_after(http: httpx.AsyncClient) -> None:
    body = {"model": "gpt-4o-mini", "messages": [user(unique("[[fault:429:3]]"))], "stream": True}
    response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "3000"
    assert response.json()["error"]["type"] == "requests"
    assert response.headers["x-offline-outcome"] == "429:3"


async def test_injected_permanent_errors(sdk: AsyncOpenAI) -> None:
    messages: list[Any] = [user(unique("[[fault:401,400]]"))]
    with pytest.raises(openai.AuthenticationError) as denied:
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert denied.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError):
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)
    await sdk.chat.completions.create(model="gpt-4o", messages=messages)


async def test_timeout_hangs_then_504(make_app: Callable[..., Starlette]) -> None:
    app = make_app(hang_seconds=0.1)
    messages: list[Any] = [user(unique("[[fault:timeout]]"))]
    async with sdk_for(app) as sdk:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as info:
            await sdk.chat.completions.create(model="gpt-4o", messages=messages)
        assert time.monotonic() - started >= 0.1
        assert info.value.status_code == 504
        await sdk.chat.completions.create(model="gpt-4o", messages=messages)


async def test_cut_non_stream_is_500(sdk: AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        await sdk.chat.completions.create(model="gpt-4o", messages=[user(unique("[[fault:cut]]"))])
    assert info.value.status_code == 500


async def test_cut_stream_in_process_is_a_connection_error(
    app: Starlette, sdk: AsyncOpenAI
) -> None:
    # ASGITransport buffers the whole response and asserts it completed.
    messages: list[Any] = [user(unique("[[fault:cut]]"))]
    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
    [record] = model_of(app).records(conversation_identity(messages))
    assert (record["outcome"], record["status"], record["tokens_sent"]) == ("cut", 200, 3)


async def test_cut_stream_on_the_wire(
    make_app: Callable[..., Starlette], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(cut_after_tokens=2)
    messages: list[Any] = [user(unique("cut me off [[fault:cut]]"))]
    tokens = split_tokens(render_reply(messages))
    received: list[str] = []
    with running_server(app) as base:
        async with real_sdk(base) as sdk:
            stream = await sdk.chat.completions.create(
                model="gpt-4o",
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
            # The SDK yields what arrived, then httpx raises: no final chunk, no [DONE].

            async def drain() -> None:
                async for chunk in stream:
                    assert chunk.usage is None
                    assert chunk.choices[0].finish_reason is None
                    received.append(chunk.choices[0].delta.content or "")

            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                await drain()
            assert received == ["", *tokens[:2]]
            # the retry (attempt 2) succeeds
            stream = await sdk.chat.completions.create(
                model="gpt-4o", messages=messages, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            assert text == "".join(tokens)
    assert "returned without completing response" not in caplog.text


async def test_client_timeout_on_a_hang(make_app: Callable[..., Starlette]) -> None:
    app = make_app()  # hang_seconds=600: only the client's timeout ends it
    messages: list[Any] = [user(unique("[[fault:timeout]]"))]
    with running_server(app) as base:
        async with real_sdk(base, timeout=0.2) as sdk:
            started = time.monotonic()
            with pytest.raises(openai.APITimeoutError):
                await sdk.chat.completions.create(model="gpt-4o", messages=messages)
            assert time.monotonic() - started >= 0.2
            [record] = model_of(app).records(conversation_identity(messages))
            assert record["outcome"] == "timeout"
            await wait_for(lambda: model_of(app).records()[0]["client_disconnected"])


async def test_client_going_away_stops_the_stream(make_app: Callable[..., Starlette]) -> None:
    app = make_app()
    messages: list[Any] = [user(unique("long one [[long:100000]] [[tps:200]]"))]
    with running_server(app) as base:
        async with real_sdk(base) as sdk:
            stream = await sdk.chat.completions.create(
                model="gpt-4o", messages=messages, stream=True
            )
            seen = 0
            async for _chunk in stream:
                seen += 1
                if seen == 5:
                    break
            await stream.close()
        await wait_for(lambda: model_of(app).records()[0]["client_disconnected"])
        record = model_of(app).records()[0]
        assert 4 <= record["tokens_sent"] < 1000


async def test_global_fault_rate(make_app: Callable[..., Starlette]) -> None:
    conversations = [[user(f"bench {i}")] for i in range(40)]

    async def outcomes(app: Starlette) -> list[int]:
        async with http_for(app) as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": m},
                        headers=AUTH,
                    )
                    for m in conversations
                )
            )
        return [r.status_code for r in responses]

    first = await outcomes(make_app(fault_rate=0.5, fault_kind="429", seed=3))
    again = await outcomes(make_app(fault_rate=0.5, fault_kind="429", seed=3))
    assert first == again
    assert set(first) == {200, 429}
    assert await outcomes(make_app(fault_rate=1.0, fault_kind="500")) == [500] * 40
    assert await outcomes(make_app(fault_rate=0.0, fault_kind="500")) == [200] * 40
    # an explicit marker wins over the global mode
    app = make_app(fault_rate=1.0, fault_kind="500")
    async with http_for(app) as http:
        body = {"model": "gpt-4o", "messages": [user("x [[fault:ok]]")]}
        assert (await http.post("/v1/chat/completions", json=body, headers=AUTH)).is_success


async def test_global_fault_mix(make_app: Callable[..., Starlette]) -> None:
    """A comma-separated fault_kind spreads the faulted requests over its outcomes, seeded."""

    async def outcomes(app: Starlette) -> list[str]:
        async with http_for(app) as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/v1/chat/completions",
                        json={"model": "gpt-4o-mini", "messages": [user(f"mix {i}")]},
                        headers=AUTH,
                    )
                    for i in range(60)
                )
            )
        return [r.headers["x-offline-outcome"] for r in responses]

    first = await outcomes(make_app(fault_rate=1.0, fault_kind="429,500,503", seed=5))
    assert first == await outcomes(make_app(fault_rate=1.0, fault_kind="429,500,503", seed=5))
    assert set(first) == {"429", "500", "503"}
    assert all(first.count(kind) >= 10 for kind in ("429", "500", "503"))
    half = await outcomes(make_app(fault_rate=0.5, fault_kind="429:2,503", seed=5))
    assert set(half) == {"ok", "429:2", "503"}
    with pytest.raises(ValueError, match="fault outcome"):
        OfflineModelConfig(fault_kind="429,418")


# Timing


async def test_latency_ttft_and_tps_delay_the_reply(make_app: Callable[..., Starlette]) -> None:
    async with sdk_for(make_app(latency_ms=50)) as sdk:
        started = time.monotonic()
        await sdk.chat.completions.create(model="gpt-4o", messages=[user(unique())])
        assert time.monotonic() - started >= 0.05

    async with sdk_for(make_app()) as sdk:
        started = time.monotonic()
        stream = await sdk.chat.completions.create(
            model="gpt-4o", messages=[user(unique("slow start [[ttft:50]]"))], stream=True
        )
        _ = [c async for c in stream]
        assert time.monotonic() - started >= 0.05

        messages: list[Any] = [user(unique("slow words [[tps:100]] [[long:10]]"))]
        tokens = len(split_tokens(render_reply(messages)))
        started = time.monotonic()
        stream = await sdk.chat.completions.create(model="gpt-4o", messages=messages, stream=True)
        _ = [c async for c in stream]
        assert time.monotonic() - started >= (tokens - 1) / 100

        started = time.monotonic()  # non-stream waits the same
        await sdk.chat.completions.create(
            model="gpt-4o", messages=[user(unique("[[ttft:50]] [[latency:20]]"))]
        )
        assert time.monotonic() - started >= 0.07


async def test_stream_timing_on_the_wire(make_app: Callable[..., Starlette]) -> None:
    app = make_app(ttft_ms=100, tokens_per_second=20)
    messages: list[Any] = [user(unique("a b"))]
    arrivals: list[float] = []
    with running_server(app) as base:
        async with real_sdk(base) as sdk:
            started = time.monotonic()
            stream = await sdk.chat.completions.create(
                model="gpt-4o", messages=messages, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic() - started)
    assert arrivals[0] >= 0.1
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.04 for gap in gaps), gaps


# Request records


async def test_requests_are_recorded_without_keys(app: Starlette, http: httpx.AsyncClient) -> None:
    messages: list[Any] = [user(unique("[[fault:500]]"))]
    body = {"model": "gpt-4o-mini", "messages": messages, "stream": True}
    before = time.time()
    for _ in range(2):
        await http.post("/v1/chat/completions", json=body, headers=AUTH)
    await http.post("/v1/chat/completions", json=body)  # no key
    await http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer short"})

    response = await http.get("/_offline/requests")
    assert KEY not in response.text and "short" not in response.text
    records = response.json()
    identity = conversation_identity(messages)
    assert [(r["attempt"], r["outcome"], r["status"]) for r in records] == [
        (1, "500", 500),
        (2, "ok", 200),
        (None, "401", 401),
        (3, "ok", 200),
    ]
    first = records[0]
    assert first["conversation"] == identity
    assert (first["model"], first["stream"], first["key_last4"]) == ("gpt-4o-mini", True, "1234")
    assert records[2]["key_last4"] is None
    assert records[3]["key_last4"] == "****"
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert records[0]["t_monotonic"] <= records[1]["t_monotonic"]
    assert before <= first["t_wall"] <= time.time()
    assert records[1]["tokens_sent"] == len(split_tokens(render_reply(messages)))

    filtered = await http.get("/_offline/requests", params={"conversation": identity})
    assert len(filtered.json()) == 3
    assert (await http.delete("/_offline/requests")).status_code == 200
    assert (await http.get("/_offline/requests")).json() == []
    # clearing the records keeps the attempt counters
    response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.headers["x-offline-attempt"] == "4"
    assert response.headers["x-offline-conversation"] == identity


async def test_health_needs_no_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/_offline/health")).json() == {"status": "ok"}


def test_serve_log_filter_installed() -> None:
    create_offline_model_app()
    logger = logging.getLogger("uvicorn.error")
    record = logger.makeRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "ASGI callable returned without completing response.",
        (),
        None,
    )
    assert not logger.filter(record)
