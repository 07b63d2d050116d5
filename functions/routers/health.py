"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentmarket.core.metrics import PoolCollector, api_registry
from agentmarket.services import health
from functions.deps import State

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable or not migrated"}})
async def readyz(state: State) -> JSONResponse:
    """Ready to serve: the database answers and every migration file is applied."""
    result = await health.readiness(pool=state.pool, versions=state.migration_versions)
    return JSONResponse(result.report, status_code=200 if result.ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: State) -> Response:
    """This process's series, with its request pool's gauges read from the pool at scrape time."""
    registry = api_registry(PoolCollector("requests", state.pool.get_stats))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
