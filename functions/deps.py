"""FastAPI dependencies: settings, the caller, and the caller's session (`CallerSession`: the
per-request transaction as the caller, which the services take)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool

from agentmarket.core import sentry
from agentmarket.core.auth import TokenVerifier, User, bearer_token
from agentmarket.core.config import Settings
from agentmarket.core.errors import AnonymousToken, Unauthorized
from agentmarket.db.caller import CallerSession
from agentmarket.domain.secrets import SecretBox
from agentmarket.domain.signing import DeploymentSigner
from agentmarket.services.catalog import CatalogCache
from agentmarket.services.deployments import ConfigRules
from agentmarket.services.limits import StreamSlots
from agentmarket.services.streams import StreamHub
from agentmarket.services.telemetry import EventSink

__all__ = [
    "AppSettings",
    "AppState",
    "Box",
    "Cache",
    "Caller",
    "CurrentUser",
    "Events",
    "Rules",
    "Signer",
    "State",
    "UserSession",
    "app_settings",
    "app_state",
    "bearer_scheme",
    "caller_session",
    "config_rules",
    "current_user",
    "get_box",
    "get_cache",
    "get_events",
    "get_signer",
    "optional_user",
    "user_session",
]


@dataclass
class AppState:
    """What the app holds for its lifetime (built in the lifespan, closed at shutdown)."""

    settings: Settings
    pool: AsyncConnectionPool
    verifier: TokenVerifier
    box: SecretBox
    migration_versions: tuple[str, ...]
    cache: CatalogCache
    events: EventSink
    hub: StreamHub
    stream_slots: StreamSlots  # open streams per user, on this instance
    signer: DeploymentSigner


async def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.agentmarket
    return state


State = Annotated[AppState, Depends(app_state)]


async def app_settings(state: State) -> Settings:
    return state.settings


async def get_box(state: State) -> SecretBox:
    return state.box


async def get_cache(state: State) -> CatalogCache:
    return state.cache


async def get_events(state: State) -> EventSink:
    return state.events


async def get_signer(state: State) -> DeploymentSigner:
    return state.signer


async def config_rules(state: State) -> ConfigRules:
    """What a deployment's configuration must keep to besides its agent's schema."""
    return ConfigRules(
        allow_http_urls=state.settings.allow_http_urls,
        max_knowledge_base_bytes=state.settings.max_knowledge_base_bytes,
    )


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A Supabase access token. Routes marked public also accept none (or the anon key).",
)


async def optional_user(
    request: Request,
    state: State,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User | None:
    """The signed-in user, or None for a caller without a token or with the project's anon key
    (which Supabase clients send when nobody is signed in). A bad token is always a 401."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return None
    try:
        user = await state.verifier.verify(token)
    except AnonymousToken:
        return None
    request.scope.setdefault("state", {})["user_id"] = str(user.id)
    sentry.bind_context(user_id=str(user.id))
    return user


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise Unauthorized()
    return user


async def caller_session(
    state: State, user: Annotated[User | None, Depends(optional_user)]
) -> AsyncIterator[CallerSession]:
    """The caller's transaction (anon when signed out), opened only if the route needs it."""
    async with CallerSession(state.pool, user.claims if user else None) as session:
        yield session


async def user_session(
    state: State, user: Annotated[User, Depends(current_user)]
) -> AsyncIterator[CallerSession]:
    """The signed-in user's transaction (401 when signed out), opened only if the route needs
    it."""
    async with CallerSession(state.pool, user.claims) as session:
        yield session


CurrentUser = Annotated[User, Depends(current_user)]
# scope="function": the transaction commits when the route returns, before the status line is
# sent, so a client told 2xx can read its write at once and a failed COMMIT is a 503, not a 2xx.
Caller = Annotated[CallerSession, Depends(caller_session, scope="function")]
UserSession = Annotated[CallerSession, Depends(user_session, scope="function")]
Box = Annotated[SecretBox, Depends(get_box)]
AppSettings = Annotated[Settings, Depends(app_settings)]
Cache = Annotated[CatalogCache, Depends(get_cache)]
Events = Annotated[EventSink, Depends(get_events)]
Signer = Annotated[DeploymentSigner, Depends(get_signer)]
Rules = Annotated[ConfigRules, Depends(config_rules)]
