"""Errors as RFC 9457 problem+json, from one place.

Every error response has `{type, title, status, detail, code, request_id}` (+ `errors` for field
problems, JSON Pointer paths). Unexpected exceptions are answered (a bare 500 problem without
internals) and logged by `functions.middleware`, which keeps the connection usable.

A database that is away is never a 500: whatever path meets a lost or refused connection (or a
pool timeout) answers 503 `database_unavailable` with `Retry-After`
(docs/operations.md#database-outages).
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentmarket.core.errors import (
    AppError,
    BadRequest,
    DatabaseUnavailable,
    DeploymentTotalLimit,
    FieldError,
    LimitExceeded,
    MalformedJSON,
    MethodNotAllowed,
    NotFound,
    ValidationFailed,
)
from agentmarket.core.metrics import RATE_LIMIT_REJECTIONS

__all__ = ["PROBLEM_JSON", "TYPE_BASE", "install", "problem_body", "problem_response"]

log = structlog.get_logger("agentmarket.http")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://agentmarket.dev/problems/"


def problem_body(
    *,
    code: str,
    status: int,
    title: str,
    detail: str,
    request_id: str | None,
    errors: list[FieldError] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + code.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id,
    }
    if errors:
        body["errors"] = [{"path": e.path, "message": e.message} for e in errors]
    return body


def problem_response(request: Request, exc: AppError) -> JSONResponse:
    return JSONResponse(
        problem_body(
            code=exc.code,
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
            request_id=getattr(request.state, "request_id", None),
            errors=exc.errors,
        ),
        status_code=exc.status,
        media_type=PROBLEM_JSON,
        headers=exc.headers,
    )


def _pointer(loc: tuple[Any, ...]) -> str:
    """FastAPI's error location as a JSON Pointer into the request part it names."""
    parts = list(loc)
    where = parts.pop(0) if parts else "body"
    escaped = [str(p).replace("~", "~0").replace("/", "~1") for p in parts]
    prefix = "" if where == "body" else f"/{where}"
    return prefix + "".join(f"/{p}" for p in escaped)


def _validation_error(exc: RequestValidationError) -> AppError:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedJSON()
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return BadRequest("A JSON request body is required.")
    fields = [
        FieldError(path=_pointer(tuple(e.get("loc", ()))), message=_message(e)) for e in errors
    ]
    return ValidationFailed(errors=sorted(fields, key=lambda f: f.path))


def _message(error: dict[str, Any]) -> str:
    # pydantic's messages describe the rule, not the input, so no submitted value is echoed.
    return str(error.get("msg", "is invalid"))


def _count_rejection(exc: LimitExceeded | DeploymentTotalLimit) -> None:
    """One metric sample and one log line per refusal by a limit (the user id comes from the
    request's bound context; never the message text)."""
    limit = exc.limit if isinstance(exc, LimitExceeded) else "deployments_total"
    RATE_LIMIT_REJECTIONS.labels(limit=limit).inc()
    log.info(
        "limit.rejected", limit=limit, code=exc.code, retry_after=exc.headers.get("Retry-After")
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        if isinstance(exc, LimitExceeded | DeploymentTotalLimit):
            _count_rejection(exc)
        return problem_response(request, exc)

    @app.exception_handler(psycopg.OperationalError)
    async def database_error(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The services map these to DatabaseUnavailable where they run SQL; this catches any
        # path that does not, so an outage is a 503 to retry, not an internal error.
        log.warning("database.unavailable", error=type(exc).__name__, path=request.url.path)
        return problem_response(request, DatabaseUnavailable())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(request, _validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        mapped: AppError
        if exc.status_code == 404:
            mapped = NotFound("No such route.")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed(headers=dict(exc.headers or {}))
        elif 400 <= exc.status_code < 500:
            mapped = BadRequest(str(exc.detail))
        else:
            mapped = AppError()
        return problem_response(request, mapped)
