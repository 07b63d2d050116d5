"""Repeated anonymous catalog GETs are answered from the cache before routing (functions.cache.
CachedAnswers) with the very response the route sends, events and log line included; anything
with a credential, another method or a cache miss is routed as before; and concurrent misses of
one key share one query (services.catalog.CatalogCache.loading)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from agentmarket.core.config import Settings
from agentmarket.core.logging import configure_logging
from agentmarket.services import catalog
from functions import cache as http_cache
from functions.app import create_app
from tests.api.conftest import Caller

pytestmark = pytest.mark.db

LIST = "/api/marketplace/agents?q=sql&sort=name"
DETAIL = "/api/marketplace/agents/sql-sidekick"
CATEGORIES = "/api/marketplace/categories"


@pytest.fixture
async def cached_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings.model_copy(update={"catalog_cache_seconds": 60}))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def cached(cached_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=cached_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def without_request_id(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k != "x-request-id"}


@pytest.mark.parametrize("url", [LIST, DETAIL, CATEGORIES])
async def test_a_repeated_anonymous_get_gets_the_routed_answer_without_routing(
    cached: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    routed = await cached.get(url)
    assert routed.status_code == 200

    async def refuse(**_: Any) -> Any:
        raise AssertionError("routed")

    for name in ("list_agents", "get_agent", "list_categories"):
        monkeypatch.setattr(catalog, name, refuse)
    fast = await cached.get(url)
    assert fast.status_code == 200
    assert fast.content == routed.content
    assert without_request_id(fast) == without_request_id(routed)
    assert list(fast.headers.keys()) == list(routed.headers.keys())
    assert fast.headers["x-request-id"] != routed.headers["x-request-id"]
    # Revalidation is answered the same way: 304, no body, the same validators.
    not_modified = await cached.get(url, headers={"If-None-Match": routed.headers["etag"]})
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == routed.headers["etag"]
    assert not_modified.headers["cache-control"] == routed.headers["cache-control"]
    assert "content-type" not in not_modified.headers
    # A client-supplied request id is still echoed.
    echoed = await cached.get(url, headers={"X-Request-ID": "edge-1234-abcd"})
    assert echoed.headers["x-request-id"] == "edge-1234-abcd"


async def test_the_routed_304_and_the_cached_304_are_the_same(
    cached: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    etag = (await cached.get(LIST)).headers["etag"]
    await cached.get(LIST)
    routed = await cached.get(LIST + "&limit=20", headers={"If-None-Match": etag})
    assert routed.status_code == 304  # the first GET of this URL, routed
    monkeypatch.setattr(catalog, "list_agents", None)  # would fail if routed
    fast = await cached.get(LIST + "&limit=20", headers={"If-None-Match": etag})
    assert without_request_id(fast) == without_request_id(routed)
    assert fast.status_code == 304


async def test_cached_answers_record_the_same_events_and_log_line(
    cached_app: FastAPI, cached: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    lines = io.StringIO()
    configure_logging("info", json_logs=True, stream=lines)
    try:
        for _ in range(3):
            assert (await cached.get(LIST)).status_code == 200
            assert (await cached.get(DETAIL)).status_code == 200
    finally:
        configure_logging("info")
    assert await cached_app.state.agentmarket.events.flush() == 6
    rows = conn.execute(
        "select name, user_id, properties->>'query', properties->>'slug'"
        " from private.telemetry_events order by id"
    ).fetchall()
    assert (
        rows
        == [
            ("marketplace.search.performed", None, "sql", None),
            ("marketplace.agent.viewed", None, None, "sql-sidekick"),
        ]
        * 3
    )
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    requests = [line for line in logged if line["event"] == "request"]
    assert [(r["route"], r["status"], r["user_id"]) for r in requests] == [
        ("/api/marketplace/agents", 200, None),
        ("/api/marketplace/agents/{agent}", 200, None),
    ] * 3
    assert len({r["request_id"] for r in requests}) == 6


async def test_a_caller_with_a_token_is_always_routed(
    cached_app: FastAPI,
    cached: httpx.AsyncClient,
    conn: psycopg.Connection,
    alice: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await cached.get(DETAIL)
    viewed = await cached.get(DETAIL, headers=alice.headers)
    assert viewed.status_code == 200
    bad = await cached.get(DETAIL, headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    await cached_app.state.agentmarket.events.flush()
    users = conn.execute("select user_id from private.telemetry_events order by id").fetchall()
    assert users == [(None,), (alice.user.id,)]


async def test_a_miss_is_routed_and_sees_the_database(
    cached_app: FastAPI, cached: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    first = await cached.get(DETAIL)
    conn.execute("update public.marketplace_agents set tagline = 'new' where slug = 'sql-sidekick'")
    assert (await cached.get(DETAIL)).json() == first.json()  # still cached
    cached_app.state.agentmarket.cache.clear()
    again = await cached.get(DETAIL)
    assert again.json()["tagline"] == "new"
    assert again.headers["etag"] != first.headers["etag"]


async def test_other_urls_methods_and_failures_are_not_answered_early(
    cached: httpx.AsyncClient,
) -> None:
    await cached.get(LIST)
    # Another query string is its own URL: parsed and validated by the route.
    assert (await cached.get(LIST + "&limit=0")).status_code == 422
    assert (await cached.get(LIST + "&limit=0")).status_code == 422
    # Not found is never remembered.
    for _ in range(2):
        assert (await cached.get("/api/marketplace/agents/no-such-agent")).status_code == 404
    head = await cached.head(LIST)
    assert head.status_code == 405  # as before: the catalog routes answer GET only


async def test_the_remembered_urls_are_bounded_oldest_out() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_cache.offer_cached(Request(scope), lambda: None)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = http_cache.CachedAnswers(app, maxsize=2)

    async def get(path: str) -> None:
        scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(_: Any) -> None:
            pass

        await middleware(scope, receive, send)

    for path in ("/a", "/b", "/c"):
        await get(path)
    assert len(middleware) == 2
    assert middleware.remembers("/c", b"")
    assert not middleware.remembers("/a", b"")


async def test_concurrent_misses_of_one_url_run_one_query(
    cached_app: FastAPI, cached: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    searches = 0
    search = catalog._search

    async def counted(*args: Any) -> Any:
        nonlocal searches
        searches += 1
        await asyncio.sleep(0.05)  # the others arrive while this one is loading
        return await search(*args)

    monkeypatch.setattr(catalog, "_search", counted)
    responses = await asyncio.gather(*(cached.get(LIST) for _ in range(8)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert searches == 1
    assert cached_app.state.agentmarket.cache.loads_in_progress() == 0


async def test_a_failed_load_lets_the_next_waiter_load() -> None:
    cache = catalog.CatalogCache(60)
    key = ("k",)
    loads: list[str] = []

    async def load(name: str, fail: bool) -> object:
        value = cache.get(key)
        if value is None:
            async with cache.loading(key):
                value = cache.get(key)
                if value is None:
                    loads.append(name)
                    await asyncio.sleep(0.01)
                    if fail:
                        raise RuntimeError("database went away")
                    value = name
                    cache.put(key, value)
        return value

    results = await asyncio.gather(
        load("first", True), load("second", False), load("third", False), return_exceptions=True
    )
    assert isinstance(results[0], RuntimeError)
    assert list(results[1:]) == ["second", "second"]
    assert loads == ["first", "second"]
    assert cache.loads_in_progress() == 0


async def test_loading_does_nothing_while_caching_is_off() -> None:
    cache = catalog.CatalogCache(0)
    async with cache.loading(("k",)), cache.loading(("k",)):  # no lock: re-entrant, never waits
        assert cache.loads_in_progress() == 0
