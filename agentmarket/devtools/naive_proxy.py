"""BENCHMARK REFERENCE, NOT A PRODUCT PATH: the "naive proxy" `agentmarket bench chat` compares the
real pipeline with (docs/benchmarks.md).

The simplest thing a user could build instead of our API + queue + worker: one FastAPI endpoint,
`POST /api/agents/{deployment_id}/chat`, that

1. verifies the same Supabase JWT (`agentmarket.core.auth.TokenVerifier`, as the API does);
2. reads the deployment, its agent and prompt (the caller must own it), creates the conversation
   on its first message or reads the history window of a known one, and stores the user message;
3. calls the same model *inside the request* and relays each delta as an SSE `message.delta`;
4. stores the finished reply (and the conversation's counters) in one transaction at the end.

No queue, no lease, no resumable stream: a crash loses the reply, a dropped connection loses the
rest of it. Its database writes go through a **service login** (the worker's, WORKER_DATABASE_URL,
which acts as `service_role`), not as the caller under RLS: the caller (`authenticated`) may only
read these tables; every write goes through our SECURITY DEFINER functions, which a naive proxy
would not have. Ownership is checked in its own queries instead.

Two model clients (`--mode`):
- `sdk`: the openai SDK (`AsyncOpenAI.chat.completions.create(stream=True)`, a pydantic chunk per
  event), the "naive proxy";
- `raw`: the same request with httpx, the SSE body split by lines and decoded with `json`, the
  "raw proxy".

Run by the bench as its own uvicorn process:
    python -m agentmarket.devtools.naive_proxy --port 8300 --mode sdk
with the same environment as `agentmarket serve` (DATABASE_URL or WORKER_DATABASE_URL,
SUPABASE_JWT_SECRET, OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL, OPENAI_MAX_TOKENS).
Its Postgres connections are named `agentmarket-bench-<mode>-proxy` (application_name).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.auth import TokenVerifier, bearer_token
from agentmarket.core.config import Settings
from agentmarket.core.errors import InvalidToken

__all__ = ["APPLICATION_NAMES", "MODES", "create_app", "main"]

MODES = ("sdk", "raw")
APPLICATION_NAMES = {mode: f"agentmarket-bench-{mode}-proxy" for mode in MODES}
HISTORY_MESSAGES = 20  # the worker's default window (WORKER_HISTORY_MESSAGES)

# The reference's own SQL, values always as parameters. Ours lives in agentmarket/db/sql/.
DEPLOYMENT_SQL = """
select a.name, a.model, p.system_prompt
  from public.agent_deployments d
  join public.marketplace_agents a on a.id = d.agent_id
  left join private.agent_prompts p on p.agent_id = a.id
 where d.id = %(deployment_id)s and d.user_id = %(user_id)s and d.deleted_at is null
   and d.status = 'active'
"""
NEW_CONVERSATION_SQL = """
insert into public.agent_conversations (deployment_id, user_id)
values (%(deployment_id)s, %(user_id)s) returning id
"""
HISTORY_SQL = """
select role, content from public.agent_messages
 where conversation_id = %(conversation_id)s and user_id = %(user_id)s
   and status = 'completed' and content <> ''
 order by created_at desc, id desc limit %(limit)s
"""
USER_MESSAGE_SQL = """
insert into public.agent_messages (conversation_id, user_id, role, content, status)
values (%(conversation_id)s, %(user_id)s, 'user', %(content)s, 'completed')
returning id, created_at
"""
REPLY_SQL = """
insert into public.agent_messages (id, conversation_id, user_id, role, content, status,
  reply_to, error_code, error_message, model, prompt_tokens, completion_tokens, ttft_ms,
  latency_ms, completed_at)
values (%(id)s, %(conversation_id)s, %(user_id)s, 'assistant', %(content)s, %(status)s,
  %(reply_to)s, %(error_code)s, %(error_message)s, %(model)s, %(prompt_tokens)s,
  %(completion_tokens)s, %(ttft_ms)s, %(latency_ms)s, now())
"""
COUNTERS_SQL = """
update public.agent_conversations
   set message_count = message_count + 2, last_message_at = now()
 where id = %(conversation_id)s and user_id = %(user_id)s
"""


@dataclass
class _Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


Deltas = Callable[[str, list[dict[str, str]], int, _Usage], AsyncIterator[str]]


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _sdk_deltas(settings: Settings) -> tuple[Deltas, Callable[[], Awaitable[None]]]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else "",
        base_url=settings.openai_base_url,
        timeout=settings.openai_timeout_seconds,
        max_retries=0,
    )

    async def deltas(
        model: str, messages: list[dict[str, str]], max_tokens: int, usage: _Usage
    ) -> AsyncIterator[str]:
        stream = await client.chat.completions.create(  # type: ignore[call-overload]
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage.prompt_tokens = chunk.usage.prompt_tokens
                usage.completion_tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return deltas, client.close


def _raw_deltas(settings: Settings) -> tuple[Deltas, Callable[[], Awaitable[None]]]:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    client = httpx.AsyncClient(
        base_url=settings.openai_base_url or "https://api.openai.com/v1",
        headers={"Authorization": f"Bearer {key}"},
        timeout=settings.openai_timeout_seconds,
    )

    async def deltas(
        model: str, messages: list[dict[str, str]], max_tokens: int, usage: _Usage
    ) -> AsyncIterator[str]:
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"model answered HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    usage.completion_tokens = chunk["usage"].get("completion_tokens")
                choices = chunk.get("choices") or []
                content = choices[0].get("delta", {}).get("content") if choices else None
                if content:
                    yield content

    return deltas, client.aclose


@dataclass
class _Proxy:
    settings: Settings
    pool: AsyncConnectionPool
    verifier: TokenVerifier
    deltas: Deltas

    async def chat(self, deployment_id: uuid.UUID, request: Request) -> Response:
        token = bearer_token(request.headers.get("authorization"))
        try:
            user = await self.verifier.verify(token or "")
        except InvalidToken as exc:
            return JSONResponse({"detail": str(exc)}, status_code=401)
        body = await request.json()
        message = body.get("message")
        if not isinstance(message, str) or not message.strip():
            return JSONResponse({"detail": "message is required"}, status_code=422)
        args: dict[str, Any] = {"deployment_id": deployment_id, "user_id": user.id}
        async with self.pool.connection() as conn:
            agent = await (await conn.execute(DEPLOYMENT_SQL, args)).fetchone()
            if agent is None:
                return JSONResponse({"detail": "deployment not found"}, status_code=404)
            history: list[dict[str, str]] = []
            conversation = body.get("conversation_id")
            if conversation is None:
                row = await (await conn.execute(NEW_CONVERSATION_SQL, args)).fetchone()
                assert row is not None
                conversation = row[0]
            else:
                args["conversation_id"], args["limit"] = conversation, HISTORY_MESSAGES
                rows = await (await conn.execute(HISTORY_SQL, args)).fetchall()
                history = [{"role": r, "content": c} for r, c in reversed(rows)]
            args |= {"conversation_id": conversation, "content": message}
            stored = await (await conn.execute(USER_MESSAGE_SQL, args)).fetchone()
            assert stored is not None
        name, model, prompt = agent
        messages = [
            {"role": "system", "content": prompt or f"You are {name}."},
            *history,
            {"role": "user", "content": message},
        ]
        reply = {
            "id": uuid.uuid4(),
            "conversation_id": conversation,
            "user_id": user.id,
            "reply_to": stored[0],
            "model": model or self.settings.openai_model,
        }
        return StreamingResponse(
            self.relay(reply, messages),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def relay(
        self, reply: dict[str, Any], messages: list[dict[str, str]]
    ) -> AsyncIterator[bytes]:
        """The model's deltas as SSE while they come, then the reply stored in one transaction."""
        created = {"id": reply["id"], "conversation_id": reply["conversation_id"]}
        yield _sse("message.created", {"message": {**created, "role": "assistant"}})
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        usage = _Usage()
        error = None
        try:
            max_tokens = self.settings.openai_max_tokens
            async for text in self.deltas(reply["model"], messages, max_tokens, usage):
                first = first or time.perf_counter()
                parts.append(text)
                yield _sse("message.delta", {"message_id": reply["id"], "delta": text})
        except Exception as exc:  # a naive proxy: any model failure fails the reply
            error = type(exc).__name__
        done = time.perf_counter()
        row = {
            **reply,
            "content": "".join(parts),
            "status": "failed" if error else "completed",
            "error_code": "model_error" if error else None,
            "error_message": error,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "ttft_ms": round(((first or done) - started) * 1000),
            "latency_ms": round((done - started) * 1000),
        }
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(REPLY_SQL, row)
            await conn.execute(COUNTERS_SQL, row)
        final = {**created, "role": "assistant", "content": row["content"], "status": row["status"]}
        final["completed_at"] = datetime.now(UTC).isoformat()
        yield _sse("message.failed" if error else "message.completed", {"message": final})


def create_app(settings: Settings, mode: str) -> FastAPI:
    """The reference proxy's app (`mode`: "sdk" or "raw")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    pool = AsyncConnectionPool(
        settings.worker_url,
        min_size=4,
        max_size=16,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAMES[mode]},
        open=False,
    )
    verifier = TokenVerifier.from_settings(settings)
    deltas, close_model = _sdk_deltas(settings) if mode == "sdk" else _raw_deltas(settings)
    proxy = _Proxy(settings, pool, verifier, deltas)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        try:
            yield
        finally:
            await pool.close()
            await close_model()
            await verifier.aclose()

    app = FastAPI(lifespan=lifespan, title=f"naive proxy ({mode}): a benchmark reference")

    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route("/api/agents/{deployment_id}/chat", proxy.chat, methods=["POST"])
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="A benchmark reference, not a product path.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--mode", choices=MODES, default="sdk")
    args = parser.parse_args(argv)
    app = create_app(Settings(), args.mode)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
