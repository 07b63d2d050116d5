"""ASGI middleware: request id, body size limit, one canonical log line per request."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentmarket.core import sentry
from agentmarket.core.config import Settings
from agentmarket.core.errors import AppError, PayloadTooLarge, UnsupportedMediaType
from agentmarket.core.faults import FAULT_HEADER, ForcedFault
from agentmarket.core.metrics import HTTP_REQUEST_DURATION
from functions.problems import PROBLEM_JSON, problem_body

__all__ = ["CORS_ALLOW_HEADERS", "CORS_EXPOSE_HEADERS", "RequestContextMiddleware", "install_cors"]

log = structlog.get_logger("agentmarket.http")

# A client may pass its own id (e.g. from a gateway); anything odd is replaced.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class _TooLarge(Exception):
    pass


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _request_id(headers: dict[str, str]) -> str:
    supplied = headers.get("x-request-id", "")
    return supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex


def _unsupported_body(method: str, headers: dict[str, str]) -> bool:
    """A POST, PUT or PATCH that carries a body that is not JSON."""
    if method not in ("POST", "PUT", "PATCH") or _is_json(headers.get("content-type")):
        return False
    declared = headers.get("content-length")
    return declared not in (None, "0") or "chunked" in headers.get("transfer-encoding", "")


# Methods we answer; any other a client sends is counted as "other", so a client cannot grow the
# metric's label set.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _observe(method: str, route: str | None, response: _Response, started: float) -> None:
    """`http_request_duration_seconds`: by route template (never the raw path), to the
    response's start (a stream's length is not the request's latency)."""
    end = response.started_at if response.started_at is not None else time.perf_counter()
    HTTP_REQUEST_DURATION.labels(
        route=route or "unmatched",
        method=method if method in _METHODS else "other",
        status=str(response.status),
    ).observe(end - started)


class _Response:
    """What has been sent of the response; `send` adds the X-Request-ID header to it."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self._request_id = request_id
        self.status = 500
        self.started = False
        self.started_at: float | None = None  # perf_counter() when the response started
        self.ended = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
            self.started_at = time.perf_counter()
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", self._request_id.encode()),
            ]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)


def _tag_route(scope: Scope) -> None:
    """The route's ids (deployment_id, conversation_id, message_id) as tags of the request's
    events and transaction."""
    if sentry.enabled():
        sentry.set_tags(scope.get("path_params") or {})


def _faulty(send: Send, headers: dict[str, str]) -> Send:
    """`send` that raises `ForcedFault` when the response starts (agentmarket.core.faults); its
    text repeats the Authorization header, which no error report may keep."""

    async def faulty(message: Message) -> None:
        if message["type"] == "http.response.start":
            authorization = headers.get("authorization")
            raise ForcedFault(f"forced by {FAULT_HEADER} (authorization: {authorization})")
        await send(message)

    return faulty


class RequestContextMiddleware:
    """Binds request_id (echoed as X-Request-ID) and, with Sentry, trace_id; enforces the body
    limit, logs the request. `faults` (APP_ENV=test only) honours `X-Agentmarket-Fault: raise`."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, faults: bool = False) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = _request_id(headers)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        if sentry.enabled():
            sentry.bind_context(request_id=request_id, trace_id=sentry.current_trace_id())
        else:
            structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        response = _Response(send, request_id)
        forward: Send = response.send
        if self.faults and headers.get(FAULT_HEADER) == "raise":
            forward = _faulty(forward, headers)
        try:
            await self._forward(scope, receive, forward, headers, request_id)
        except _TooLarge:
            too_large = PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
            await self._send_problem(response.send, too_large, request_id)
        except Exception as exc:
            # Caught here rather than left to Starlette's ServerErrorMiddleware, which re-raises
            # into the server: that drops the keep-alive connection and prints a multi-line
            # traceback. One JSON line (traceback in its `exception` field) and a clean 500.
            log.error("unhandled_error", exc_info=exc, path=scope["path"])
            _tag_route(scope)
            sentry.capture_unexpected(exc)
            if not response.started:
                await self._send_problem(
                    response.send, AppError("An unexpected error occurred."), request_id
                )
            elif not response.ended:
                await response.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            route = scope.get("route")
            _tag_route(scope)
            _observe(scope["method"], getattr(route, "path", None), response, started)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=getattr(route, "path", None),
                status=response.status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                user_id=scope.get("state", {}).get("user_id"),
            )

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        request_id: str,
    ) -> None:
        """Refuse a body that is not JSON; hand the request to the app with its body bounded."""
        if _unsupported_body(scope["method"], headers):
            await self._send_problem(send, UnsupportedMediaType(), request_id)
            return
        declared = headers.get("content-length")
        if declared is not None:
            # The server (h11/httptools) holds the client to its declared length.
            if not declared.isdigit() or int(declared) > self.max_body_bytes:
                raise _TooLarge
            await self.app(scope, receive, send)
        elif scope["method"] in ("GET", "HEAD") and "transfer-encoding" not in headers:
            # Neither length nor chunks: no body (RFC 9112 §6.3), nothing to bound or replay.
            await self.app(scope, receive, send)
        else:
            # Chunked or absent: read it all (bounded) first, then replay it to the app.
            await self.app(scope, await self._buffered(receive), send)

    async def _buffered(self, receive: Receive) -> Receive:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return replay

    @staticmethod
    async def _send_problem(send: Send, exc: AppError, request_id: str) -> None:
        body: dict[str, Any] = problem_body(
            code=exc.code,
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
            request_id=request_id,
        )
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": exc.status,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


# Pages on CORS_ALLOW_ORIGINS (docs/operations.md#other-origins-cors) may send these request
# headers and read these response headers (the CORS-safelisted ones need no listing).
CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-None-Match",
    "Last-Event-ID",
    "X-Request-ID",
)
CORS_EXPOSE_HEADERS = ("ETag", "RateLimit", "RateLimit-Policy", "Retry-After", "X-Request-ID")


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Starlette's CORSMiddleware for CORS_ALLOW_ORIGINS, added last so it runs first: every
    answer (the request middleware's own 413, 415 and 500 too) carries its headers, and a
    preflight is answered before anything else sees it. Nothing when the setting is empty: no
    CORS header at all. Never credentials: the API takes bearer tokens, not cookies, so `*` is
    as safe as a list (a page can only send a token it already holds)."""
    if not settings.cors_allow_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_allow_origins),
        allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=list(CORS_ALLOW_HEADERS),
        expose_headers=list(CORS_EXPOSE_HEADERS),
        allow_credentials=False,
        max_age=600,
    )
