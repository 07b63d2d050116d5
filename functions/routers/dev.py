"""The dev sign-in: a local user and an access token, as `agentmarket token` mints them.

Registered only when APP_ENV=dev (`create_app` never adds the router otherwise, so the path is a
404 like any unknown one): it signs in as anyone, which is what a laptop without Supabase Auth
needs and nothing else may offer. It is not rate limited: whoever can reach it can already be
any user, so a limit would protect nothing. It connects over DATABASE_URL (the operator's
login), the only login that may create `auth.users` rows. Not in the OpenAPI document.
docs/api.md#dev-sign-in
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from agentmarket.core.config import AppEnv, Settings
from agentmarket.domain.models import DevSession, DevSessionRequest, DevSessionUser
from agentmarket.ops import tokens
from functions.deps import AppSettings

__all__ = ["dev_sign_in", "router"]

router = APIRouter(prefix="/api/dev", tags=["development"], include_in_schema=False)


def dev_sign_in(settings: Settings) -> bool:
    """The dev sign-in exists: APP_ENV=dev and a secret to sign tokens with."""
    return settings.app_env is AppEnv.DEV and settings.supabase_jwt_secret is not None


@router.post("/session", response_model=DevSession)
async def create_session(body: DevSessionRequest, settings: AppSettings) -> DevSession:
    """Sign in as `email` (created when missing; `admin` gives it app_metadata.role = admin,
    and never takes it away, as `agentmarket token --admin` does)."""
    # Blocking (a psycopg connection of its own, like the CLI's): in a thread. A database that
    # is away is the app's usual 503 database_unavailable.
    user, token = await anyio.to_thread.run_sync(
        lambda: tokens.issue_local_token(settings, email=body.email, admin=body.admin)
    )
    role = user.app_metadata.get("role")
    return DevSession(
        access_token=token,
        expires_in=tokens.DEFAULT_TTL_SECONDS,
        user=DevSessionUser(
            id=user.id, email=user.email, role="admin" if role == "admin" else None
        ),
    )
