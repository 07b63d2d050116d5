"""Property-based fuzzing of every route from the app's own OpenAPI spec (schemathesis), against
the real server process on a fresh database: no 5xx, and every response matches the spec."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from agentmarket.core.config import DEV_JWT_SECRET
from agentmarket.ops.tokens import ensure_user, mint_access_token
from tests.procs import free_port

pytestmark = pytest.mark.db

EXAMPLES_PER_OPERATION = int(os.environ.get("AGENTMARKET_FUZZ_EXAMPLES", "40"))
POISONED_EXAMPLES_PER_OPERATION = max(1, EXAMPLES_PER_OPERATION // 3)

# What Python's json (and so the server's parser) accepts but JSON and PostgreSQL do not. The
# generator never produces these: its strings are valid Unicode and its numbers finite.
POISON = st.sampled_from(
    ["\ud800", "ok \udfff", "\udbff\udbff", "\x00", float("nan"), float("inf"), float("-inf")]
)
SURROGATE_KEY = "k\udc00"


def poisoned(body: Any, poison: str | float, where: int) -> bytes:
    """`body` as JSON text with `poison` put at one of its values (or as the value, or the name,
    of a new field), picked by `where`. json.dumps writes a lone surrogate as a `\\udXXX` escape
    and NaN/Infinity bare, as a client could send them."""
    body = copy.deepcopy(body)
    if not isinstance(body, dict | list):
        body = {"value": body}
    places: list[tuple[dict[Any, Any] | list[Any], Any]] = []
    stack: list[Any] = [body]
    while stack:
        item = stack.pop()
        keys = list(item) if isinstance(item, dict) else range(len(item))
        for key in keys:
            places.append((item, key))
            if isinstance(item[key], dict | list):
                stack.append(item[key])
    if isinstance(body, dict):
        places.append((body, SURROGATE_KEY))
    container, key = places[where % len(places)]
    container[key] = poison
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "APP_ENV": "test", "LOG_LEVEL": "warning"}
    env.pop("SUPABASE_URL", None)
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "agentmarket", "serve", "--port", str(port)],
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


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def headers(db_url: str) -> dict[str, str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = ensure_user(conn, email="fuzz@example.com")
    return {"Authorization": f"Bearer {mint_access_token(user, secret=DEV_JWT_SECRET)}"}


@pytest.fixture
def operations(live_server: str) -> list[Any]:
    """Every operation of the served spec."""
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]


@pytest.mark.timeout(600)
def test_no_route_returns_5xx_or_breaks_its_spec(
    live_server: str, headers: dict[str, str], operations: list[Any]
) -> None:
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
            case.validate_response(response, checks=CHECKS)

        exercise()


@pytest.mark.timeout(300)
def test_unstorable_json_in_any_body_is_a_4xx_that_keeps_to_the_spec(
    live_server: str, headers: dict[str, str], operations: list[Any]
) -> None:
    """Every operation with a JSON body, sent generated bodies with a lone surrogate, NUL, NaN or
    Infinity somewhere in them (values, nested values, a field name): no 5xx, and the answer
    (a 4xx problem) matches the spec."""
    writes = ("POST", "PATCH", "PUT")
    with_body = [op for op in operations if op.method.upper() in writes and op.body]
    assert len(with_body) >= 5

    for operation in with_body:

        @given(
            case=operation.as_strategy(),
            poison=POISON,
            where=st.integers(min_value=0, max_value=50),
        )
        @settings(
            max_examples=POISONED_EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: schemathesis.Case, poison: str | float, where: int) -> None:  # type: ignore[type-arg]
            case.body = poisoned(case.body, poison, where)
            response = case.call(
                base_url=live_server, headers={**headers, "Content-Type": "application/json"}
            )
            case.validate_response(response, checks=CHECKS)
            assert 400 <= response.status_code < 500, response.text

        exercise()
