from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from agentmarket.core.config import AppEnv, Settings
from agentmarket.core.faults import FAULT_HEADER
from functions.app import create_app
from tests.api.conftest import Caller

pytestmark = pytest.mark.db

KEY = "sk-proj-Zx81LmQ2vT5rY7uW9iOpA3sD6fGhJkL4"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = response.json()
    assert body.keys() >= PROBLEM_KEYS
    assert (body["status"], body["code"]) == (status, code)
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body


async def test_malformed_json_is_400(client: httpx.AsyncClient, alice: Caller) -> None:
    response = await client.post(
        "/api/marketplace/deploy",
        content=b'{"agent_id": "sql-sidekick", ',
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")


async def test_wrong_types_are_422_with_pointers(client: httpx.AsyncClient, alice: Caller) -> None:
    response = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": 5, "name": "", "config": [], "extra": 1},
        headers=alice.headers,
    )
    body = assert_problem(response, 422, "validation_failed")
    paths = [e["path"] for e in body["errors"]]  # type: ignore[attr-defined]
    assert paths == ["/agent_id", "/config", "/extra", "/name"]


async def test_missing_body_is_400(client: httpx.AsyncClient, alice: Caller) -> None:
    response = await client.post("/api/marketplace/deploy", headers=alice.headers)
    assert_problem(response, 400, "bad_request")


async def test_oversize_bodies_are_413_declared_or_chunked(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    big = b'{"agent_id": "sql-sidekick", "config": {"x": "' + b"a" * (3 * 1024 * 1024) + b'"}}'
    declared = await client.post(
        "/api/marketplace/deploy",
        content=big,
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert_problem(declared, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    chunked = await client.post(
        "/api/marketplace/deploy",
        content=chunks(),
        headers={**alice.headers, "content-type": "application/json"},
    )
    assert_problem(chunked, 413, "payload_too_large")


async def test_unknown_routes_and_methods_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/nothing-here"), 404, "not_found")
    response = await client.delete("/api/marketplace/categories")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_every_response_has_a_request_id_and_a_good_one_is_echoed(
    client: httpx.AsyncClient,
) -> None:
    plain = await client.get("/healthz")
    assert len(plain.headers["x-request-id"]) == 32
    echoed = await client.get("/healthz", headers={"X-Request-ID": "edge-1234-abcd"})
    assert echoed.headers["x-request-id"] == "edge-1234-abcd"
    junk = await client.get("/healthz", headers={"X-Request-ID": "<script>"})
    assert junk.headers["x-request-id"] != "<script>"


async def test_one_canonical_line_per_request_and_no_secret_in_any_log(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    with capture_logs() as logs:
        response = await client.post(
            "/api/marketplace/deploy",
            json={"agent_id": "code-review-buddy", "config": {"openai_api_key": KEY}},
            headers=alice.headers,
        )
    assert response.status_code == 201
    requests = [entry for entry in logs if entry["event"] == "request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["route"] == "/api/marketplace/deploy"
    assert line["status"] == 201
    assert line["method"] == "POST"
    assert line["duration_ms"] >= 0
    assert line["user_id"] == str(alice.user.id)
    assert [e["event"] for e in logs if e["event"].startswith("marketplace.")] == [
        "marketplace.agent.deployed"
    ]
    assert KEY not in repr(logs)
    assert alice.token not in repr(logs)


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
    metrics = await client.get("/metrics")
    assert "marketplace_deployments_total" in metrics.text


async def test_the_app_connects_only_as_the_least_privilege_api_login(
    app: FastAPI, client: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    async with app.state.agentmarket.pool.connection() as own:
        cur = await own.execute("select session_user, current_user")
        assert await cur.fetchone() == ("agentmarket_api", "agentmarket_api")
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/api/marketplace/agents")).status_code == 200
    logins = conn.execute(
        "select application_name, array_agg(distinct usename::text) from pg_stat_activity"
        " where datname = current_database() and application_name like 'agentmarket-%'"
        " group by application_name order by 1"
    ).fetchall()
    assert logins == [
        ("agentmarket-api", ["agentmarket_api"]),
        ("agentmarket-api-listen", ["agentmarket_api"]),
    ]


async def test_nul_characters_are_bad_input_not_a_server_error(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    response = await client.get("/api/marketplace/agents", params={"category": "a\x00b"})
    body = assert_problem(response, 422, "validation_failed")
    assert [e["path"] for e in body["errors"]] == ["/query/category"]  # type: ignore[attr-defined]
    deployed = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {"persona_name": "nul\x00"}},
        headers=alice.headers,
    )
    assert_problem(deployed, 422, "validation_failed")


async def test_the_anon_key_is_anonymous_on_public_routes_and_401_on_user_routes(
    client: httpx.AsyncClient,
) -> None:
    import time

    import jwt

    from agentmarket.core.config import DEV_JWT_SECRET

    now = int(time.time())
    anon_key = jwt.encode(
        {"iss": "supabase", "role": "anon", "iat": now, "exp": now + 600}, DEV_JWT_SECRET
    )
    headers = {"Authorization": f"Bearer {anon_key}"}
    assert (await client.get("/api/marketplace/agents", headers=headers)).status_code == 200
    response = await client.get("/api/deployments", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_non_json_bodies_are_415(client: httpx.AsyncClient, alice: Caller) -> None:
    response = await client.post(
        "/api/marketplace/deploy",
        content=b"agent_id=sql-sidekick",
        headers={**alice.headers, "content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 415, "unsupported_media_type")


async def test_blank_and_unknown_query_parameters_do_not_break_browsing(
    client: httpx.AsyncClient,
) -> None:
    everything = await client.get("/api/marketplace/agents")
    blank = await client.get(
        "/api/marketplace/agents",
        params={"q": "", "category": "", "tag": " ", "pricing": "", "sort": "", "_": "123"},
    )
    assert blank.status_code == 200
    assert blank.json() == everything.json()


async def test_database_outage_is_503_with_retry_after(
    client: httpx.AsyncClient, app: object
) -> None:
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    await app.state.agentmarket.pool.close()
    response = await client.get("/api/marketplace/categories")
    body = assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "2"
    assert "postgres" not in str(body)


@pytest.mark.parametrize(("app_env", "status"), [("dev", 200), ("test", 500)])
async def test_the_forced_fault_header_exists_only_in_tests(
    settings: Settings, app_env: str, status: int
) -> None:
    """`X-Agentmarket-Fault: raise` (agentmarket.core.faults) fails a request only when
    APP_ENV=test; anywhere else it is an ordinary, ignored header."""
    # (A prod app needs hosted logins this test has not got; it is built like a dev one.)
    application = create_app(settings.model_copy(update={"app_env": AppEnv(app_env)}))
    transport = httpx.ASGITransport(app=application, raise_app_exceptions=False)
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        response = await client.get("/api/marketplace/agents", headers={FAULT_HEADER: "raise"})
    assert response.status_code == status
