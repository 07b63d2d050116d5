"""Worker-side CPU per streamed token: `LLMClient`'s own SSE parsing against the SDK's.

    python -m agentmarket.devtools.bench_stream [--tokens 2000] [--tps 100] [--runs 3]
    python -m agentmarket.devtools.bench_stream --in-process [--tokens 2000] [--runs 5]

Starts the offline model as its own process (so its CPU is not counted), streams a reply of
`--tokens` tokens through `LLMClient` with `fast_stream=False` and `True` over httpx, and with
`fast_stream=True` over aiohttp (`http_backend`, the worker's default), and prints the client
process's CPU time (`time.process_time`) per streamed token for each. `--tps 0` sends the tokens
without pauses (more tokens per network read, so less CPU per token than a paced stream);
`--streams N` streams N replies at once (a busy worker: one loop wake-up serves several reads).
Two more lines read the same stream(s) with plain httpx and with a bare aiohttp session, bytes
thrown away: the network stack's share, which no parsing change removes (the aiohttp line is the
floor under the worker's transport). Everything runs on the worker's event loop (uvloop when
installed, `agentmarket.core.loops`). `--in-process` serves a recorded-shape SSE body from an
`httpx.MockTransport` instead, one event per read and no socket: the cost of the SDK and the
parsing alone, without the network stack's.
Recorded in docs/benchmarks.md#model-stream-parsing-cpu-per-token.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx
import orjson

from agentmarket.core import loops
from agentmarket.llm.client import CompletionRequest, HttpBackend, LLMClient, TextDelta

__all__ = ["main"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_model(port: int) -> subprocess.Popen[bytes]:
    code = (
        "from agentmarket.devtools.offline_model import OfflineModelConfig, serve; "
        f"serve('127.0.0.1', {port}, OfflineModelConfig())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/_offline/health").is_success:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the offline model did not start")


def _sse_events(tokens: int) -> list[bytes]:
    """An OpenAI-shaped stream: a role chunk, one chunk per token, the final and usage chunks."""
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000}
    head |= {"model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_bench"}

    def event(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice], "usage": None}) + b"\n\n"

    words = ("lorem ", "ipsum ", "dolor ", "sit ", "amet, ", "consectetur ")
    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": words[i % len(words)]}) for i in range(tokens)]
    events.append(event({}, "stop"))
    usage = {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": tokens + 10}
    events.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


class _Events(httpx.AsyncByteStream):
    def __init__(self, events: list[bytes]) -> None:
        self._events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._events:
            yield piece


def _mock_transport(tokens: int) -> httpx.MockTransport:
    events = _sse_events(tokens)

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream; charset=utf-8"}
        return httpx.Response(200, headers=headers, stream=_Events(events))

    return httpx.MockTransport(answer)


async def _one_reply(llm: LLMClient, tokens: int, tps: float, number: int) -> int:
    req = CompletionRequest(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"bench {number} [[long:{tokens}]] [[tps:{tps:g}]]"}],
        api_key="sk-bench-" + "x" * 20,
    )
    deltas = 0
    async with contextlib.aclosing(llm.stream(req)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                deltas += 1
    return deltas


async def _one_run(llm: LLMClient, tokens: int, tps: float, streams: int = 1) -> tuple[float, int]:
    """CPU seconds of this process while streaming `streams` replies at once, and the text
    deltas received."""
    started = time.process_time()
    counts = await asyncio.gather(*(_one_reply(llm, tokens, tps, n) for n in range(streams)))
    return time.process_time() - started, sum(counts)


async def _floor(base_url: str, *, tokens: int, tps: float, runs: int) -> str:
    """The same paced stream read with plain httpx and thrown away: the network stack's share."""
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": f"bench [[long:{tokens}]] [[tps:{tps:g}]]"}],
    }
    headers = {"authorization": "Bearer sk-bench-" + "x" * 20}
    per_token: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        for _ in range(runs):
            started = time.process_time()
            async with http.stream("POST", "/chat/completions", json=body) as response:
                async for _piece in response.aiter_raw():
                    pass
            per_token.append((time.process_time() - started) / tokens * 1e6)
    values = ", ".join(f"{v:.1f}" for v in per_token)
    return (
        f"{'httpx only':15} tps={tps:g} tokens~{tokens}: median "
        f"{statistics.median(per_token):.1f} µs CPU/token (runs: {values})"
    )


async def _aiohttp_floor(base_url: str, *, tokens: int, tps: float, runs: int, streams: int) -> str:
    """The same paced streams read with a bare aiohttp session (the worker's transport without
    the SDK, httpx or any parsing), bytes thrown away."""
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": f"bench [[long:{tokens}]] [[tps:{tps:g}]]"}],
    }
    headers = {"authorization": "Bearer sk-bench-" + "x" * 20}

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.post(f"{base_url}/chat/completions", json=body) as response:
            async for _piece in response.content.iter_any():
                pass

    per_token: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as session:
        await one(session)  # warm up: the connection
        for _ in range(runs):
            started = time.process_time()
            await asyncio.gather(*(one(session) for _ in range(streams)))
            per_token.append((time.process_time() - started) / (tokens * streams) * 1e6)
    values = ", ".join(f"{v:.1f}" for v in per_token)
    return (
        f"{'aiohttp only':15} tps={tps:g} streams={streams} tokens~{tokens}: median "
        f"{statistics.median(per_token):.1f} µs CPU/token (runs: {values})"
    )


async def _measure(
    base_url: str,
    *,
    fast: bool,
    backend: HttpBackend,
    tokens: int,
    tps: float,
    runs: int,
    in_process: bool,
    streams: int,
) -> str:
    http = httpx.AsyncClient(transport=_mock_transport(tokens)) if in_process else None
    llm = LLMClient(
        base_url=base_url,
        platform_api_key=None,
        fast_stream=fast,
        http_client=http,
        http_backend=backend,
    )
    try:
        await _one_run(llm, 50, 0)  # warm up: connection, imports
        per_token: list[float] = []
        for _ in range(runs):
            cpu, deltas = await _one_run(llm, tokens, tps, streams)
            per_token.append(cpu / deltas * 1e6)
    finally:
        await llm.aclose()
        if http is not None:
            await http.aclose()
    name = ("fast (orjson)" if fast else "SDK (pydantic)") + ("" if in_process else f" {backend}")
    values = ", ".join(f"{v:.1f}" for v in per_token)
    where = "in-process" if in_process else f"tps={tps:g} streams={streams}"
    return (
        f"{name:15} {where} tokens~{tokens}: median {statistics.median(per_token):.1f} "
        f"µs CPU/token (runs: {values})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--tps", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1, help="replies streamed at once")
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args(argv)
    port = _free_port()
    model = None if args.in_process else _start_model(port)
    try:
        variants: list[tuple[bool, HttpBackend]] = [(False, "httpx"), (True, "httpx")]
        if not args.in_process:
            variants.append((True, "aiohttp"))
        print(f"event loop: {loops.uvicorn_loop()}", flush=True)
        for fast, backend in variants:
            line = loops.run(
                _measure(
                    f"http://127.0.0.1:{port}/v1",
                    fast=fast,
                    backend=backend,
                    tokens=args.tokens,
                    tps=args.tps,
                    runs=args.runs,
                    in_process=args.in_process,
                    streams=1 if args.in_process else args.streams,
                )
            )
            print(line, flush=True)
        if model is not None:
            floor = _floor(
                f"http://127.0.0.1:{port}/v1", tokens=args.tokens, tps=args.tps, runs=args.runs
            )
            print(loops.run(floor), flush=True)
            bare = _aiohttp_floor(
                f"http://127.0.0.1:{port}/v1",
                tokens=args.tokens,
                tps=args.tps,
                runs=args.runs,
                streams=args.streams,
            )
            print(loops.run(bare), flush=True)
    finally:
        if model is not None:
            model.terminate()
            model.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
