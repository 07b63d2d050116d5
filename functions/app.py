"""The functions app: `create_app(settings)` builds it; nothing connects until it starts."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from agentmarket.core import loops, paths, sentry
from agentmarket.core.auth import TokenVerifier
from agentmarket.core.config import AppEnv, Settings, get_settings
from agentmarket.core.logging import configure_logging
from agentmarket.db.pool import connect_timeout, create_pool, refresh_soon
from agentmarket.domain.secrets import SecretBox
from agentmarket.domain.signing import DeploymentSigner
from agentmarket.ops import migrate
from agentmarket.services.catalog import CatalogCache
from agentmarket.services.limits import StreamSlots
from agentmarket.services.streams import StreamHub
from agentmarket.services.telemetry import EventSink
from functions import problems, shutdown, web
from functions.cache import CachedAnswers
from functions.deps import AppState
from functions.middleware import RequestContextMiddleware, install_cors
from functions.routers import admin, chat, deployments, health, marketplace, me, survey

__all__ = ["MAX_BODY_BYTES", "create_app"]

log = structlog.get_logger("agentmarket.http")

MAX_BODY_BYTES = 2 * 1024 * 1024  # a support agent's knowledge base can be large

DESCRIPTION = """\
Browse a curated catalog of AI agents, deploy one with your own configuration, and manage your
deployments. Authenticate with a Supabase access token (`Authorization: Bearer …`); the catalog is
public. Errors are RFC 9457 `application/problem+json` with a stable `code`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app. Without `settings` it reads them from the environment: `agentmarket serve
    --workers N` has uvicorn call it so in each of its processes. Everything that connects (the
    pool, the StreamHub's one LISTEN connection, the telemetry sink) is made per app when it
    starts, so processes share nothing but the database."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    sentry.init_sentry(settings, process="api")  # only with SENTRY_DSN

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Every connection logs in as the functions' own login (API_DATABASE_URL): it can become
        # anon or authenticated and nothing else (supabase/migrations/20261130090000_…).
        pool = create_pool(settings)
        await pool.open(wait=False)
        verifier = TokenVerifier.from_settings(settings)
        events = EventSink(pool)
        events.start()
        # Once its LISTEN connection is back after an outage, the pool replaces the connections
        # that idled through it (docs/operations.md#database-outages).
        hub = StreamHub(
            settings.api_direct_url,
            connect_timeout=connect_timeout(settings),
            on_reconnect=lambda: refresh_soon(pool),
        )
        await hub.start()
        signer = DeploymentSigner(pool)
        warming = asyncio.create_task(signer.warm(), name="signing-key")
        log.info("api.started", loop=loops.running_loop_name(), pid=os.getpid())
        app.state.agentmarket = AppState(
            settings=settings,
            pool=pool,
            verifier=verifier,
            box=SecretBox(settings.encryption_keys),
            migration_versions=tuple(m.version for m in migrate.load_files(paths.migrations_dir())),
            cache=CatalogCache(settings.catalog_cache_seconds),
            events=events,
            hub=hub,
            stream_slots=StreamSlots(settings.max_open_streams_per_user),
            signer=signer,
        )
        # Everything made so far (modules, the app and its routes, schemas) lives as long as the
        # process: move it out of the collector's sight, so the full collections that the
        # requests' own allocations trigger scan only what was made since (each one used to
        # stop the event loop for tens of milliseconds: docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            # SIGTERM: every open stream ends with `stream.closing` at once, so the server's
            # graceful shutdown waits only for ordinary requests (functions/shutdown.py).
            with shutdown.on_stop_signal(hub.shutdown):
                yield
        finally:
            warming.cancel()
            await hub.aclose()
            await events.aclose()
            await verifier.aclose()
            await pool.close()
            sentry.flush()

    app = FastAPI(
        title="Agent Marketplace",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    problems.install(app)
    # The last added runs first: the request id and log line wrap the cached answers too.
    app.add_middleware(CachedAnswers)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=MAX_BODY_BYTES,
        # Forced faults (agentmarket.core.faults) exist only in tests.
        faults=settings.app_env is AppEnv.TEST,
    )
    # Outermost: every answer carries the CORS headers, a preflight is answered first.
    install_cors(app, settings)
    for module in (marketplace, deployments, chat, me, survey, admin, health):
        app.include_router(module.router)
    # The web client's routes and, for what no route matched, its files and pages.
    web.install(app, settings)
    return app
