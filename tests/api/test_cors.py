"""CORS_ALLOW_ORIGINS (Starlette's CORSMiddleware): listed origins only, preflights answered for
what the client sends, the rate-limit and request-id headers readable, never credentials; unset,
no CORS header at all. And the setting's own validation."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from agentmarket.core.config import AppEnv, Settings, check_env, get_settings, parse_cors_origins
from agentmarket.ops import migrate
from tests.api.conftest import Caller

APP = "https://app.example.com"
OTHER = "http://localhost:5173"
EVIL = "https://evil.example.net"
EXPOSED = {"ratelimit", "ratelimit-policy", "retry-after", "x-request-id"}


def preflight(origin: str, method: str = "POST", headers: str = "") -> dict[str, str]:
    request = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        request["Access-Control-Request-Headers"] = headers
    return request


def exposed(response: httpx.Response) -> set[str]:
    value = response.headers.get("access-control-expose-headers", "")
    return {h.strip().lower() for h in value.split(",") if h.strip()}


# --- the setting ---------------------------------------------------------------------------------


def test_origins_are_parsed_and_normalised() -> None:
    assert parse_cors_origins("") == ()
    assert parse_cors_origins(" , ") == ()
    assert parse_cors_origins(
        "https://App.Example.com/, http://localhost:5173 ,https://x.example:443,http://[::1]:8080"
    ) == (
        "https://app.example.com",
        "http://localhost:5173",
        "https://x.example",
        "http://[::1]:8080",
    )
    assert parse_cors_origins("*") == ("*",)
    assert parse_cors_origins("https://a.example,https://a.example") == ("https://a.example",)


@pytest.mark.parametrize(
    "value",
    [
        "app.example.com",  # no scheme
        "ftp://app.example.com",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "https://*.example.com",
        "https://app.example.com:99999",
        "*,https://app.example.com",  # `*` is everything: alone or not at all
    ],
)
def test_what_is_not_an_origin_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match=r"origin|`\*`"):
        get_settings(cors_allow_origins=value)


def test_the_environment_variable_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", f"{APP},{OTHER}")
    assert get_settings().cors_allow_origins == (APP, OTHER)
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "")
    assert get_settings().cors_allow_origins == ()


def test_a_wildcard_in_prod_is_noted_by_check_env() -> None:
    settings = get_settings(app_env="dev", cors_allow_origins="*")
    prod = settings.model_copy(update={"app_env": AppEnv.PROD})
    [note] = [p for p in check_env(prod) if p.setting == "CORS_ALLOW_ORIGINS"]
    assert not note.required
    assert not [p for p in check_env(settings) if p.setting == "CORS_ALLOW_ORIGINS"]


# --- the app -------------------------------------------------------------------------------------


class TestListedOrigins:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"cors_allow_origins": (APP, OTHER)})

    @pytest.mark.db
    async def test_a_preflight_for_a_chat_send_is_answered(self, client: httpx.AsyncClient) -> None:
        asked = "authorization, content-type, idempotency-key, x-request-id, last-event-id"
        for origin in (APP, OTHER):
            response = await client.options(
                "/api/agents/0b7e7a55-4b5e-4a43-9c53-1d9d9d9d9d9d/chat",
                headers=preflight(origin, "POST", asked),
            )
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == origin
            assert "access-control-allow-credentials" not in response.headers
            allowed = {
                h.strip().lower()
                for h in response.headers["access-control-allow-headers"].split(",")
            }
            assert set(asked.replace(" ", "").split(",")) <= allowed
            assert "POST" in response.headers["access-control-allow-methods"]
            assert "Origin" in response.headers["vary"]
        for method in ("PATCH", "DELETE"):
            response = await client.options(
                "/api/deployments/x", headers=preflight(APP, method, "authorization")
            )
            assert response.status_code == 200
            assert method in response.headers["access-control-allow-methods"]

    @pytest.mark.db
    async def test_a_preflight_from_an_unlisted_origin_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        for origin in (EVIL, "https://app.example.com.evil.net", "null", APP + ":8443"):
            response = await client.options(
                "/api/marketplace/deploy", headers=preflight(origin, "POST", "authorization")
            )
            assert response.status_code == 400
            assert "access-control-allow-origin" not in response.headers

    @pytest.mark.db
    async def test_a_response_carries_the_origin_and_exposes_the_headers(
        self, client: httpx.AsyncClient, alice: Caller
    ) -> None:
        response = await client.get("/api/me/usage", headers={"Origin": APP, **alice.headers})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == APP
        assert "access-control-allow-credentials" not in response.headers
        assert exposed(response) >= EXPOSED
        assert response.headers["x-request-id"]
        # An error answered by the outer middleware (body too large) carries them too.
        big = await client.post(
            "/api/marketplace/deploy",
            content=b"{}",
            headers={
                "Origin": APP,
                "Content-Type": "application/json",
                "Content-Length": str(10**9),
                **alice.headers,
            },
        )
        assert big.status_code == 413
        assert big.headers["access-control-allow-origin"] == APP
        # From an unlisted origin: answered (CORS is the browser's rule), with no CORS header,
        # so the browser keeps it from the page.
        other = await client.get("/api/marketplace/agents", headers={"Origin": EVIL})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers

    @pytest.mark.db
    async def test_a_real_429_exposes_retry_after_and_ratelimit(
        self, client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
    ) -> None:
        migrate.store_settings(conn, chat_per_minute=1, max_in_flight_per_user=100)
        deployed = await client.post(
            "/api/marketplace/deploy",
            json={"agent_id": "sql-sidekick", "config": {}},
            headers={"Origin": APP, **alice.headers},
        )
        assert deployed.status_code == 201, deployed.text
        url = f"/api/agents/{deployed.json()['id']}/chat"
        body = {"message": "hello", "mode": "async"}
        headers = {"Origin": APP, **alice.headers}
        accepted = await client.post(url, json=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        refused = await client.post(url, json=body, headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.headers["access-control-allow-origin"] == APP
        assert exposed(refused) >= EXPOSED
        for name in ("Retry-After", "RateLimit", "RateLimit-Policy", "X-Request-ID"):
            assert refused.headers[name]


class TestWildcard:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"cors_allow_origins": ("*",)})

    @pytest.mark.db
    async def test_any_origin_without_credentials(self, client: httpx.AsyncClient) -> None:
        response = await client.options(
            "/api/marketplace/deploy", headers=preflight(EVIL, "POST", "authorization")
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers
        plain = await client.get("/api/marketplace/agents", headers={"Origin": EVIL})
        assert plain.headers["access-control-allow-origin"] == "*"
        assert exposed(plain) >= EXPOSED


@pytest.mark.db
async def test_unset_no_cors_headers_at_all(client: httpx.AsyncClient, settings: Settings) -> None:
    assert settings.cors_allow_origins == ()
    asked = await client.options(
        "/api/marketplace/deploy", headers=preflight(APP, "POST", "authorization")
    )
    assert asked.status_code == 405  # no preflight handling: the route takes POST only
    agents = await client.get("/api/marketplace/agents", headers={"Origin": APP})
    assert agents.status_code == 200
    for response in (asked, agents):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
