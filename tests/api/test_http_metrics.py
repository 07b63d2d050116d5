"""`http_request_duration_seconds{route,method,status}`: every request is counted once under its
route template (never the raw path), whether routed or answered from the cache before routing,
and a client cannot grow the label set with made-up paths or methods."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from agentmarket.core.config import Settings
from functions.app import create_app

pytestmark = pytest.mark.db

CATALOG = "/api/marketplace/agents/{agent}"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(settings.model_copy(update={"catalog_cache_seconds": 60}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


def count(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


def routes_counted() -> set[str]:
    return {
        sample.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "http_request_duration_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }


async def test_requests_are_counted_by_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = {
        "ok": count(CATALOG, "GET", "200"),
        "missing": count(CATALOG, "GET", "404"),
        "unmatched": count("unmatched", "GET", "404"),
        "other": count("unmatched", "other", "404") + count("unmatched", "other", "405"),
    }
    # The second GET of a URL is answered from the cache before routing: counted all the same.
    assert (await client.get("/api/marketplace/agents/sql-sidekick")).status_code == 200
    assert (await client.get("/api/marketplace/agents/sql-sidekick")).status_code == 200
    assert (await client.get("/api/marketplace/agents/no-such-agent")).status_code == 404
    for i in range(3):
        assert (await client.get(f"/made-up/{i}")).status_code == 404
    brewed = await client.request("BREW", "/made-up/pot")
    assert brewed.status_code in (404, 405)

    after = {
        "ok": count(CATALOG, "GET", "200"),
        "missing": count(CATALOG, "GET", "404"),
        "unmatched": count("unmatched", "GET", "404"),
        "other": count("unmatched", "other", "404") + count("unmatched", "other", "405"),
    }
    assert {k: after[k] - before[k] for k in before} == {
        "ok": 2,
        "missing": 1,
        "unmatched": 3,
        "other": 1,
    }
    assert not any(route.startswith("/made-up") for route in routes_counted())
    assert "BREW" not in {
        sample.labels["method"]
        for family in REGISTRY.collect()
        if family.name == "http_request_duration_seconds"
        for sample in family.samples
    }


async def test_metrics_show_the_request_pool_read_at_scrape_time(
    client: httpx.AsyncClient,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    # A request holds a pooled connection while it runs; afterwards it is back in the pool.
    assert (await client.get("/api/marketplace/agents")).status_code == 200
    response = await client.get("/metrics")
    assert response.status_code == 200
    samples = {
        sample.name: sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("db_pool_")
    }
    assert set(samples) == {
        "db_pool_connections_in_use",
        "db_pool_connections_idle",
        "db_pool_requests_waiting",
        "db_pool_max_connections",
    }
    assert all(sample.labels == {"pool": "requests"} for sample in samples.values())
    assert samples["db_pool_max_connections"].value == 16  # create_pool's default
    assert samples["db_pool_requests_waiting"].value == 0
    assert samples["db_pool_connections_idle"].value >= 1  # the catalog request's, given back
    # No worker series here: the marketplace gauges are sampled (and exported) by the worker.
    assert "marketplace_agents_active" not in response.text
