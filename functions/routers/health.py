"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from functions.deps import State

router = APIRouter(tags=["operations"])

APPLIED_VERSIONS = "select private.applied_migrations()"


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable or not migrated"}})
async def readyz(state: State) -> JSONResponse:
    """Ready to serve: the database answers and every migration file is applied."""
    try:
        # As the API login itself: it may read the applied versions through this one function
        # and nothing else of the history (or of any table).
        async with state.pool.connection(timeout=2) as conn:
            cur = await conn.execute(APPLIED_VERSIONS)
            applied = {version for (version,) in await cur.fetchall()}
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    # Versions the database has and this build lacks are fine (a newer instance migrated during
    # a rolling deploy); files this build has that the database lacks are not.
    behind = [m.version for m in state.migrations if m.version not in applied]
    if behind:
        return JSONResponse(
            {"status": "unavailable", "database": "ok", "migrations_not_applied": behind},
            status_code=503,
        )
    versions = applied | {m.version for m in state.migrations}
    return JSONResponse({"status": "ok", "database": "ok", "migrations": len(versions)})


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
