"""The functions app against a fresh, seeded database, driven in-process over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from agentmarket.core.config import DEV_JWT_SECRET, Settings, get_settings
from agentmarket.ops import migrate
from agentmarket.ops.tokens import LocalUser, ensure_user, mint_access_token
from functions.app import create_app


@dataclass(frozen=True)
class Caller:
    user: LocalUser
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def settings(db_url: str) -> Settings:
    """The app logs in as the least-privilege API login (the test default derived from
    DATABASE_URL); the cap is stored in the database as `agentmarket migrate` stores it."""
    settings = get_settings(
        app_env="test",
        database_url=db_url,
        supabase_url=None,
        supabase_jwt_secret=DEV_JWT_SECRET,
        max_active_deployments=3,
        catalog_cache_seconds=0,  # tests see every write at once; caching has its own test
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate.store_settings(conn, **migrate.stored_settings(settings))
    return settings


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def make_caller(conn: psycopg.Connection, email: str, *, admin: bool = False) -> Caller:
    user = ensure_user(conn, email=email, admin=admin)
    return Caller(user=user, token=mint_access_token(user, secret=DEV_JWT_SECRET))


@pytest.fixture
def alice(conn: psycopg.Connection) -> Caller:
    return make_caller(conn, "alice@example.com")


@pytest.fixture
def bob(conn: psycopg.Connection) -> Caller:
    return make_caller(conn, "bob@example.com")


@pytest.fixture
def admin(conn: psycopg.Connection) -> Caller:
    return make_caller(conn, "admin@example.com", admin=True)
