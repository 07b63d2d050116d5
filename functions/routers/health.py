"""Operations endpoints: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentmarket import migrate
from functions.deps import State

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database unreachable or not migrated"}})
async def readyz(state: State) -> JSONResponse:
    """Ready to serve: the database answers and every migration file is applied."""
    try:
        async with state.pool.connection(timeout=2) as conn:
            cur = await conn.execute(migrate.SELECT_HISTORY)
            applied = [migrate.Applied(v, n, list(s)) for v, n, s in await cur.fetchall()]
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    entries = migrate.plan(state.migrations, applied)
    # Versions the database has and this build lacks are fine (a newer instance migrated during
    # a rolling deploy); files this build has that the database lacks are not.
    behind = [e.version for e in entries if e.state is migrate.State.PENDING]
    if behind:
        return JSONResponse(
            {"status": "unavailable", "database": "ok", "migrations_not_applied": behind},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": "ok", "migrations": len(entries)})


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
