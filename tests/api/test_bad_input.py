"""Input Python's json accepts but JSON and PostgreSQL do not (lone surrogates, NaN/Infinity, NUL,
runaway nesting) is a 422 with a pointer to where it is, on every route that takes a body, and no
input at all reaches a 5xx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmarket.core.config import DEV_JWT_SECRET
from agentmarket.domain.models import RequestBody
from tests.api.conftest import Caller
from tests.api.test_errors import assert_problem

pytestmark = pytest.mark.db

JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Targets:
    deployment_id: str
    message_id: str


async def targets(client: httpx.AsyncClient, caller: Caller) -> Targets:
    deployed = await client.post(
        "/api/marketplace/deploy",
        json={"agent_id": "sql-sidekick", "config": {"persona_name": "Ada"}},
        headers=caller.headers,
    )
    assert deployed.status_code == 201, deployed.text
    deployment_id = deployed.json()["id"]
    sent = await client.post(
        f"/api/agents/{deployment_id}/chat",
        json={"message": "hello", "mode": "async"},
        headers=caller.headers,
    )
    assert sent.status_code == 202, sent.text
    return Targets(deployment_id, sent.json()["assistant_message"]["id"])


async def send(
    client: httpx.AsyncClient, caller: Caller, method: str, url: str, raw: str
) -> httpx.Response:
    """`raw` is JSON text exactly as a client could send it (escapes, NaN and all)."""
    return await client.request(
        method, url, content=raw.encode(), headers={**caller.headers, **JSON}
    )


def pointers(response: httpx.Response) -> list[tuple[str, str]]:
    body = assert_problem(response, 422, "validation_failed")
    errors: list[dict[str, str]] = body["errors"]  # type: ignore[assignment]
    return [(e["path"], e["message"]) for e in errors]


SURROGATE = "must be valid Unicode: unpaired surrogates (\\ud800-\\udfff escapes) are not allowed"
NON_FINITE = "must be a finite number: NaN and Infinity are not JSON"


@pytest.mark.parametrize(
    ("route", "raw", "expected"),
    [
        ("chat", r'{"message": "x \ud800", "mode": "async"}', [("/message", SURROGATE)]),
        ("chat", r'{"message": "\udfff"}', [("/message", SURROGATE)]),
        (
            "chat",
            r'{"message": "x", "mode": "async", "k\udc00": 1}',
            [("/k\ufffd", "field name " + SURROGATE)],
        ),
        ("chat", '{"message": "x", "mode": NaN}', [("/mode", NON_FINITE)]),
        (
            "chat",
            '{"message": "x", "conversation_id": -Infinity}',
            [("/conversation_id", NON_FINITE)],
        ),
        ("feedback", r'{"rating": "like", "comment": "nice \ud83d"}', [("/comment", SURROGATE)]),
        (
            "feedback",
            '{"rating": "like", "comment": "ok", "x": [1, Infinity]}',
            [("/x/1", NON_FINITE)],
        ),
        (
            "deploy",
            r'{"agent_id": "sql-sidekick", "config": {"persona_name": "x \ud800"}}',
            [("/config/persona_name", SURROGATE)],
        ),
        (
            "deploy",
            r'{"agent_id": "sql-sidekick", "config": {"a": {"b": [0, "\udfff"]}}}',
            [("/config/a/b/1", SURROGATE)],
        ),
        (
            "deploy",
            r'{"agent_id": "sql-sidekick", "config": {"x/\ud800~": 1}}',
            [("/config/x~1\ufffd~0", "field name " + SURROGATE)],
        ),
        (
            "deploy",
            '{"agent_id": "sql-sidekick", "config": {"temperature": NaN}}',
            [("/config/temperature", NON_FINITE)],
        ),
        (
            "deploy",
            '{"agent_id": "sql-sidekick", "config": {"temperature": 1e400}}',
            [("/config/temperature", NON_FINITE)],
        ),
        (
            "deploy",
            r'{"agent_id": "sql-sidekick", "name": "\ud800", "config": {"a": Infinity}}',
            [("/config/a", NON_FINITE), ("/name", SURROGATE)],
        ),
        ("patch", r'{"config": {"persona_name": "\ud800"}}', [("/config/persona_name", SURROGATE)]),
        (
            "patch",
            '{"config": {"persona_name": "Ada", "n": -Infinity}}',
            [("/config/n", NON_FINITE)],
        ),
        (
            "patch",
            r'{"name": "ok", "config": {"\u0000": 1}}',
            [("/config/\x00", "field name must not contain NUL characters")],
        ),
        ("conversation", r'{"title": "\ud800"}', [("/title", SURROGATE)]),
    ],
)
async def test_unstorable_json_is_422_with_a_pointer(
    client: httpx.AsyncClient, alice: Caller, route: str, raw: str, expected: list[tuple[str, str]]
) -> None:
    t = await targets(client, alice)
    method, url = {
        "chat": ("POST", f"/api/agents/{t.deployment_id}/chat"),
        "conversation": ("POST", f"/api/agents/{t.deployment_id}/conversations"),
        "feedback": ("POST", f"/api/messages/{t.message_id}/feedback"),
        "deploy": ("POST", "/api/marketplace/deploy"),
        "patch": ("PATCH", f"/api/deployments/{t.deployment_id}"),
    }[route]
    response = await send(client, alice, method, url, raw)
    assert pointers(response) == expected


async def test_nesting_is_bounded(client: httpx.AsyncClient, alice: Caller) -> None:
    deep = "[" * 200 + "]" * 200
    raw = '{"agent_id": "sql-sidekick", "config": {"x": ' + deep + "}}"
    response = await send(client, alice, "POST", "/api/marketplace/deploy", raw)
    [(path, message)] = pointers(response)
    assert path.startswith("/config/x/0/0/")
    assert message == "is nested too deeply (at most 64 levels)"


async def test_paired_surrogate_escapes_are_ordinary_text(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    t = await targets(client, alice)
    raw = r'{"message": "smile \ud83d\ude00", "mode": "async"}'
    response = await send(client, alice, "POST", f"/api/agents/{t.deployment_id}/chat", raw)
    assert response.status_code == 202, response.text
    assert response.json()["user_message"]["content"] == "smile \U0001f600"


async def test_a_bad_token_still_comes_before_a_bad_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/marketplace/deploy", content=b'{"agent_id": "\\ud800"}', headers=JSON
    )
    assert_problem(response, 401, "unauthorized")


@pytest.mark.parametrize(
    ("claim", "value"),
    [("sub", "urn:uuid:{id}"), ("sub", "{{{id}}}"), ("sub", "{hex}"), ("exp", "9999999999")],
)
async def test_odd_token_claims_are_401(
    client: httpx.AsyncClient, alice: Caller, claim: str, value: str
) -> None:
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": str(alice.user.id),
        "role": "authenticated",
        "aud": "authenticated",
        "iat": now,
        "exp": now + 600,
    }
    payload[claim] = value.format(id=alice.user.id, hex=alice.user.id.hex)
    token = jwt.encode(payload, DEV_JWT_SECRET, algorithm="HS256")
    response = await client.get("/api/deployments", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid_token")


def api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "routes", None) or getattr(
            getattr(route, "original_router", None), "routes", None
        )
        if included:
            yield from api_routes(included)


def test_every_json_body_is_checked_as_a_whole(app: FastAPI) -> None:
    bodies = {
        route.path: [param.field_info.annotation for param in route.dependant.body_params]
        for route in api_routes(app.routes)
        if route.dependant.body_params
    }
    assert len(bodies) >= 5
    for path, types in bodies.items():
        for annotation in types:
            assert isinstance(annotation, type) and issubclass(annotation, RequestBody), path


# --- property: whatever text arrives, the answer is never a 5xx ---------------------------------


@pytest.fixture
def shared() -> dict[str, Targets]:
    return {}


# Every code point, lone surrogates (category Cs) included; `st.text()` alone leaves those out.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
RAW_ESCAPES = st.sampled_from(
    [r"\ud800", r"\udbff", r"\udc00", r"\udfff", r"\ud83d\ude00", r"\u0000", r"\ud83d", r"\\"]
)


@st.composite
def raw_json_string(draw: st.DrawFn) -> str:
    """A JSON string literal mixing arbitrary text with raw escapes, as a client could send."""
    pieces = draw(st.lists(st.one_of(ANY_TEXT.map(lambda s: json.dumps(s)[1:-1]), RAW_ESCAPES)))
    return '"' + "".join(pieces) + '"'


@st.composite
def raw_config(draw: st.DrawFn) -> str:
    """A config object whose keys and string values are arbitrary, plus odd numbers."""
    values = st.one_of(
        raw_json_string(),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "0", "-0.5", "true", "null"]),
    )
    items = draw(
        st.lists(
            st.tuples(st.one_of(st.just('"persona_name"'), raw_json_string()), values), max_size=4
        )
    )
    return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(text=raw_json_string(), config=raw_config(), where=st.sampled_from(["a", "b", "c", "d"]))
async def test_no_text_reaches_a_server_error(
    client: httpx.AsyncClient,
    alice: Caller,
    shared: dict[str, Targets],
    text: str,
    config: str,
    where: str,
) -> None:
    if "targets" not in shared:  # fixtures are set up once per test, not once per example
        shared["targets"] = await targets(client, alice)
    t = shared["targets"]
    requests: list[tuple[str, str, str]] = {
        "a": [
            (
                "POST",
                f"/api/agents/{t.deployment_id}/chat",
                f'{{"message": {text}, "mode": "async"}}',
            )
        ],
        "b": [
            (
                "POST",
                f"/api/messages/{t.message_id}/feedback",
                f'{{"rating": "dislike", "comment": {text}}}',
            )
        ],
        "c": [("PATCH", f"/api/deployments/{t.deployment_id}", f'{{"config": {config}}}')],
        "d": [
            (
                "POST",
                "/api/marketplace/deploy",
                f'{{"agent_id": "sql-sidekick", "name": {text}, "config": {config}}}',
            )
        ],
    }[where]
    for method, url, raw in requests:
        response = await send(client, alice, method, url, raw)
        assert response.status_code < 500, (raw, response.text)
        if response.status_code == 422:
            assert response.json()["errors"], response.text


# --- Last-Event-ID ---------------------------------------------------------------------------


def sse_events(body: str) -> list[tuple[str | None, str, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.parametrize(
    ("last_event_id", "expected"),
    [
        # valid ids: resume right after them, exactly as before
        ("0.7", [("message.delta", "0.13", "world!"), ("message.completed", "0.13f", None)]),
        ("0.13f", [("message.completed", "0.13f", None)]),
        (None, [("message.delta", "0.13", "Hello, world!"), ("message.completed", "0.13f", None)]),
        # not ids of this stream: a reset, then the whole text again
        *[
            (
                bad,
                [
                    ("message.reset", "0.0", None),
                    ("message.delta", "0.13", "Hello, world!"),
                    ("message.completed", "0.13f", None),
                ],
            )
            for bad in [
                "0.-5",
                "-1.5",
                "0.14",
                "0.99999999999",
                "0.1.2",
                "0.+5",
                " 0.5",
                "0.x",
                "0.5ff",
            ]
        ],
    ],
)
async def test_last_event_id_outside_the_text_replays_from_the_start(
    client: httpx.AsyncClient,
    alice: Caller,
    conn: psycopg.Connection,
    last_event_id: str | None,
    expected: list[tuple[str, str, str | None]],
) -> None:
    t = await targets(client, alice)
    conn.execute(
        "update public.agent_messages set content = 'Hello, world!', status = 'completed',"
        " completed_at = now() where id = %s",
        (t.message_id,),
    )
    headers = {**alice.headers}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = await client.get(f"/api/messages/{t.message_id}/stream", headers=headers)
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert [(name, i, data.get("delta")) for i, name, data in events] == expected
    assert events[-1][2]["message"]["content"] == "Hello, world!"


async def test_unicode_digits_in_last_event_id_are_not_numbers(
    client: httpx.AsyncClient, alice: Caller, conn: psycopg.Connection
) -> None:
    # Header values travel as Latin-1; a client sending "0.\u0661" (Arabic-Indic one) as UTF-8
    # arrives as mojibake, which is no id either.
    t = await targets(client, alice)
    conn.execute(
        "update public.agent_messages set content = 'Hello', status = 'completed',"
        " completed_at = now() where id = %s",
        (t.message_id,),
    )
    response = await client.get(
        f"/api/messages/{t.message_id}/stream",
        headers=[
            *((k.encode(), v.encode()) for k, v in alice.headers.items()),
            (b"Last-Event-ID", "0.\u0661".encode()),
        ],
    )
    assert [name for _, name, _ in sse_events(response.text)] == [
        "message.reset",
        "message.delta",
        "message.completed",
    ]
