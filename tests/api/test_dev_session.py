"""`GET /api/client-config` and the dev sign-in, `POST /api/dev/session`: it mints what
`agentmarket token` mints, and exists only in a dev app (a test or prod app has no such route,
and the committed OpenAPI document never shows it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import jwt
import psycopg
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from agentmarket.cli import render_openapi
from agentmarket.core import paths
from agentmarket.core.config import DEV_JWT_SECRET, AppEnv, Settings
from functions.app import create_app

pytestmark = pytest.mark.db

SESSION = "/api/dev/session"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "app_env": AppEnv.DEV,
            "supabase_url": "http://127.0.0.1:54321",
            "supabase_anon_key": SecretStr("anon-key-for-browsers"),
        }
    )


def claims(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(
        token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated"
    )
    return decoded


async def test_client_config_in_dev(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/client-config")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    assert response.json() == {
        "supabase_url": "http://127.0.0.1:54321",
        "supabase_anon_key": "anon-key-for-browsers",
        "dev_sign_in": True,
        "app_env": "dev",
    }


async def test_a_dev_session_is_a_working_token_for_that_user(
    client: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    response = await client.post(SESSION, json={"email": " Carol@Example.com "})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["user"]["email"] == "carol@example.com"
    assert body["user"]["role"] is None
    row = conn.execute(
        "select id::text from auth.users where email = 'carol@example.com'"
    ).fetchone()
    assert row is not None and body["user"]["id"] == row[0]
    token = claims(body["access_token"])
    assert token["sub"] == row[0]
    assert token["email"] == "carol@example.com"
    assert token["iss"] == "http://127.0.0.1:54321/auth/v1"
    assert int(str(token["exp"])) - int(str(token["iat"])) == 3600
    # The API takes it.
    usage = await client.get(
        "/api/me/usage", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert usage.status_code == 200, usage.text
    # Signing in again is the same user.
    again = (await client.post(SESSION, json={"email": "carol@example.com"})).json()
    assert again["user"]["id"] == row[0]


async def test_admin_sets_the_role_as_the_cli_does(client: httpx.AsyncClient) -> None:
    response = await client.post(SESSION, json={"email": "dana@example.com", "admin": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["role"] == "admin"
    assert claims(body["access_token"])["app_metadata"] == {
        "provider": "email",
        "providers": ["email"],
        "role": "admin",
    }
    # `admin: false` never takes the role away (as `agentmarket token` without --admin).
    plain = (await client.post(SESSION, json={"email": "dana@example.com"})).json()
    assert plain["user"]["role"] == "admin"


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"email": "not-an-email"}, "/email"),
        ({"email": "a@b"}, "/email"),
        ({"email": "x" * 250 + "@example.com"}, "/email"),
        ({"email": 12}, "/email"),
        ({}, "/email"),
        ({"email": "a@example.com", "admin": "sure"}, "/admin"),
        ({"email": "a@example.com", "role": "admin"}, "/role"),
    ],
)
async def test_bad_input_is_a_422_with_a_pointer(
    client: httpx.AsyncClient, body: dict[str, object], pointer: str
) -> None:
    response = await client.post(SESSION, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_failed"
    assert [e["path"] for e in response.json()["errors"]] == [pointer]


@pytest.fixture(params=[AppEnv.TEST, AppEnv.PROD])
async def not_dev(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[FastAPI]:
    other = settings.model_copy(
        update={"app_env": request.param, "api_database_url": SecretStr(settings.api_url)}
    )
    app = create_app(other)
    async with app.router.lifespan_context(app):
        yield app


async def test_outside_dev_the_route_does_not_exist(not_dev: FastAPI) -> None:
    assert SESSION not in {getattr(route, "path", None) for route in not_dev.routes}
    transport = httpx.ASGITransport(app=not_dev)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(SESSION, json={"email": "eve@example.com", "admin": True})
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
        config = (await client.get("/api/client-config")).json()
        assert config["dev_sign_in"] is False
        assert config["app_env"] == not_dev.state.agentmarket.settings.app_env.value


async def test_without_a_jwt_secret_there_is_no_dev_sign_in(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"supabase_jwt_secret": None}))
    assert SESSION not in {getattr(route, "path", None) for route in app.routes}


def test_the_committed_openapi_document_is_the_same_in_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "dev")
    rendered = render_openapi()
    spec_paths = json.loads(rendered)["paths"]
    assert SESSION not in spec_paths
    assert "/api/client-config" in spec_paths
    assert rendered == (paths.project_root() / "docs" / "openapi.json").read_text()
