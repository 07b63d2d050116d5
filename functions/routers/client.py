"""What the web client reads when it starts (docs/api.md#client-config)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agentmarket.domain.models import ClientConfig
from functions.deps import AppSettings
from functions.routers.dev import dev_sign_in

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["web client"])


@router.get("/client-config", response_model=ClientConfig)
async def client_config(settings: AppSettings, response: Response) -> ClientConfig:
    """Where to sign in: Supabase Auth's URL and anon key (both public by design) when the
    project has them, and whether the local dev sign-in (`POST /api/dev/session`) exists."""
    response.headers["Cache-Control"] = "no-cache"
    anon_key = settings.supabase_anon_key
    return ClientConfig(
        supabase_url=settings.supabase_url,
        supabase_anon_key=anon_key.get_secret_value() if anon_key is not None else None,
        dev_sign_in=dev_sign_in(settings),
        app_env=settings.app_env,
    )
