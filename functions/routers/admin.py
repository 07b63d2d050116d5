"""Admin analytics: GET /api/admin/marketplace/stats and /metrics (docs/api.md#admin-analytics).
JSON by default; CSV with `format=csv` or `Accept: text/csv`, streamed row by row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from agentmarket.domain.models import AnalyticsQuery, MarketplaceMetrics, MarketplaceStats
from agentmarket.services import analytics
from functions.deps import UserSession
from functions.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/admin", tags=["admin"])

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


def _wants_csv(request: Request, params: AnalyticsQuery) -> bool:
    """`format` decides when given; otherwise an Accept header naming text/csv."""
    if params.format is not None:
        return params.format == "csv"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


def _csv(lines: Iterator[str], filename: str) -> StreamingResponse:
    return StreamingResponse(
        lines,
        media_type=CSV_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/marketplace/stats",
    response_model=MarketplaceStats,
    responses={**_CSV_RESPONSE, **problem_responses(401, 403, 422)},
)
async def marketplace_stats(
    request: Request, db: UserSession, params: Annotated[AnalyticsQuery, Query()]
) -> MarketplaceStats | StreamingResponse:
    """Admins only: deployments, conversations, user messages and unique chatting users per day
    (every day of the range, in `tz`), active deployments and agents now, popular agents,
    feedback and survey results."""
    report = await analytics.marketplace_stats(db=db, params=params)
    if _wants_csv(request, params):
        lines = analytics.csv_lines(analytics.stats_rows(report))
        return _csv(lines, analytics.csv_filename("stats", report))
    return report


@router.get(
    "/marketplace/metrics",
    response_model=MarketplaceMetrics,
    responses={**_CSV_RESPONSE, **problem_responses(401, 403, 422)},
)
async def marketplace_metrics(
    request: Request, db: UserSession, params: Annotated[AnalyticsQuery, Query()]
) -> MarketplaceMetrics | StreamingResponse:
    """Admins only: replies, error rate and errors by code, retries, tokens, rate-limit
    rejections and reply latency / time to first token p50/p95/p99, overall, per agent and per
    day (every day of the range, in `tz`)."""
    report = await analytics.marketplace_metrics(db=db, params=params)
    if _wants_csv(request, params):
        lines = analytics.csv_lines(analytics.metrics_rows(report))
        return _csv(lines, analytics.csv_filename("metrics", report))
    return report
