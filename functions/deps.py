"""FastAPI dependencies: settings, the caller, and the per-request transaction as the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import psycopg
import structlog
from fastapi import Depends, Request
from psycopg_pool import AsyncConnectionPool

from agentmarket.auth import TokenVerifier, User, bearer_token
from agentmarket.config import Settings
from agentmarket.db import as_caller
from agentmarket.errors import Forbidden, Unauthorized
from agentmarket.migrate import MigrationFile
from agentmarket.secrets import SecretBox


@dataclass
class AppState:
    """What the app holds for its lifetime (built in the lifespan, closed at shutdown)."""

    settings: Settings
    pool: AsyncConnectionPool
    verifier: TokenVerifier
    box: SecretBox
    migrations: list[MigrationFile]


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.agentmarket
    return state


State = Annotated[AppState, Depends(app_state)]


def get_settings(state: State) -> Settings:
    return state.settings


def get_box(state: State) -> SecretBox:
    return state.box


async def optional_user(request: Request, state: State) -> User | None:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        return None
    user = await state.verifier.verify(token)
    request.scope.setdefault("state", {})["user_id"] = str(user.id)
    structlog.contextvars.bind_contextvars(user_id=str(user.id))
    return user


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise Unauthorized()
    return user


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not user.is_admin:
        raise Forbidden("This needs an admin account.")
    return user


async def caller_conn(
    state: State, user: Annotated[User | None, Depends(optional_user)]
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection inside one transaction as the caller (anon when signed out)."""
    async with as_caller(state.pool, user.claims if user else None) as conn:
        yield conn


async def user_conn(
    state: State, user: Annotated[User, Depends(current_user)]
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection inside one transaction as the signed-in user (401 when signed out)."""
    async with as_caller(state.pool, user.claims) as conn:
        yield conn


CurrentUser = Annotated[User, Depends(current_user)]
CallerConn = Annotated[psycopg.AsyncConnection, Depends(caller_conn)]
UserConn = Annotated[psycopg.AsyncConnection, Depends(user_conn)]
Box = Annotated[SecretBox, Depends(get_box)]
AppSettings = Annotated[Settings, Depends(get_settings)]
