"""OpenAPI helpers: the problem+json error schema attached to each route's documented errors."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from functions.problems import PROBLEM_JSON

__all__ = ["DESCRIPTIONS", "FieldProblem", "Problem", "problem_responses"]


class FieldProblem(BaseModel):
    path: str = Field(description="JSON Pointer to the offending field ('' = the whole body).")
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code.")
    request_id: str | None
    errors: list[FieldProblem] | None = None


DESCRIPTIONS = {
    400: "Malformed request (e.g. invalid JSON)",
    401: "Missing, invalid or expired access token",
    403: "Not allowed",
    404: "Not found (also for rows that belong to someone else)",
    409: "Conflicts with the current state",
    413: "Request body too large",
    415: "Body is not application/json",
    422: "Invalid fields; see `errors`",
    429: "Rate limited; see Retry-After",
    503: "Database or model unavailable; see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The route's documented problems, and 503: every route that has any reads or writes the
    database, and answers `503 database_unavailable` with Retry-After while it is away
    (docs/operations.md#database-outages)."""
    return {
        status: {
            "description": DESCRIPTIONS[status],
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted({*statuses, 503})
    }
