"""Property-based fuzzing of every route from the app's own OpenAPI spec (schemathesis), against
the real server process on a fresh database: no 5xx, and every response matches the spec."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from agentmarket.config import DEV_JWT_SECRET
from agentmarket.tokens import ensure_user, mint_access_token
from tests.procs import free_port

pytestmark = pytest.mark.db

EXAMPLES_PER_OPERATION = int(os.environ.get("AGENTMARKET_FUZZ_EXAMPLES", "40"))


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "APP_ENV": "test", "LOG_LEVEL": "warning"}
    env.pop("SUPABASE_URL", None)
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentmarket.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.timeout(600)
def test_no_route_returns_5xx_or_breaks_its_spec(live_server: str, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = ensure_user(conn, email="fuzz@example.com")
    headers = {"Authorization": f"Bearer {mint_access_token(user, secret=DEV_JWT_SECRET)}"}
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 9

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = case.call(base_url=live_server, headers=headers)
            case.validate_response(response, checks=checks)

        exercise()
