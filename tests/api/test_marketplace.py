from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from fastapi import FastAPI

from agentmarket.core import paths
from agentmarket.core.config import Settings
from agentmarket.ops import seed
from functions.app import create_app
from tests.api.conftest import Caller

pytestmark = pytest.mark.db

CATALOG = seed.load_catalog(paths.seeds_dir() / "agents")
PUBLISHED = sorted((a for a in CATALOG if a.is_published), key=lambda a: a.name)
UNPUBLISHED = next(a for a in CATALOG if not a.is_published)


async def slugs(client: httpx.AsyncClient, **params: object) -> list[str]:
    response = await client.get("/api/marketplace/agents", params=params)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return [a["slug"] for a in response.json()["data"]]


async def test_list_defaults_to_popular_and_paginates_with_total(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/marketplace/agents")
    body = response.json()
    assert response.status_code == 200
    assert (body["total"], body["limit"], body["offset"]) == (len(PUBLISHED), 20, 0)
    assert len(body["data"]) == len(PUBLISHED)
    assert UNPUBLISHED.slug not in {a["slug"] for a in body["data"]}
    # Nothing deployed yet: popular = featured first, then by name.
    featured = sorted(a.name for a in PUBLISHED if a.featured)
    assert [a["name"] for a in body["data"][: len(featured)]] == featured
    assert "config_schema" not in body["data"][0]

    first = await client.get("/api/marketplace/agents", params={"sort": "name", "limit": 5})
    second = await client.get(
        "/api/marketplace/agents", params={"sort": "name", "limit": 5, "offset": 5}
    )
    names = [a["name"] for a in first.json()["data"] + second.json()["data"]]
    assert names == [a.name for a in PUBLISHED[:10]]
    assert second.json()["total"] == len(PUBLISHED)

    past_the_end = await client.get("/api/marketplace/agents", params={"offset": 500})
    assert past_the_end.json()["data"] == []
    assert past_the_end.json()["total"] == len(PUBLISHED)


async def test_sort_by_popularity_follows_deployments(
    client: httpx.AsyncClient, alice: Caller
) -> None:
    least_known = PUBLISHED[-1]
    for _ in range(2):
        deployed = await client.post(
            "/api/marketplace/deploy",
            json={"agent_id": least_known.slug, "config": {}},
            headers=alice.headers,
        )
        assert deployed.status_code == 201, deployed.text
    assert (await slugs(client, sort="popular"))[0] == least_known.slug
    detail = await client.get(f"/api/marketplace/agents/{least_known.slug}")
    assert detail.json()["deploy_count"] == 2


async def test_sort_newest(client: httpx.AsyncClient, conn: psycopg.Connection) -> None:
    conn.execute(
        "update public.marketplace_agents set created_at = now() + interval '1 day'"
        " where slug = %s",
        (PUBLISHED[3].slug,),
    )
    assert (await slugs(client, sort="newest"))[0] == PUBLISHED[3].slug


@pytest.mark.parametrize("category", sorted({a.category for a in PUBLISHED}))
async def test_filter_by_category(client: httpx.AsyncClient, category: str) -> None:
    expected = {a.slug for a in PUBLISHED if a.category == category}
    assert set(await slugs(client, category=category)) == expected


@pytest.mark.parametrize("pricing", ["free", "subscription", "pay_per_use", "one_time"])
async def test_filter_by_pricing(client: httpx.AsyncClient, pricing: str) -> None:
    expected = {a.slug for a in PUBLISHED if a.pricing_model == pricing}
    assert expected
    assert set(await slugs(client, pricing=pricing)) == expected


async def test_filter_by_tag_and_combined_filters(client: httpx.AsyncClient) -> None:
    tag = PUBLISHED[0].tags[0]
    expected = {a.slug for a in PUBLISHED if tag in a.tags}
    assert set(await slugs(client, tag=tag)) == expected
    agent = PUBLISHED[0]
    combined = await slugs(client, tag=tag, category=agent.category, pricing=agent.pricing_model)
    assert agent.slug in combined
    assert all(
        a.category == agent.category and a.pricing_model == agent.pricing_model
        for a in PUBLISHED
        if a.slug in combined
    )


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("meeting notes", "meeting-notes-summarizer"),  # words in the name
        ("meet summ", "meeting-notes-summarizer"),  # prefixes
        ("helpdsk", "helpdesk-hero"),  # a typo
        ("SQL", "sql-sidekick"),  # case
    ],
)
async def test_full_text_search_ranks_the_obvious_match_first(
    client: httpx.AsyncClient, q: str, expected: str
) -> None:
    assert (await slugs(client, q=q))[0] == expected


async def test_search_reaches_description_and_tags_and_misses_cleanly(
    client: httpx.AsyncClient,
) -> None:
    agent = next(a for a in PUBLISHED if a.slug == "helpdesk-hero")
    assert "helpdesk-hero" in await slugs(client, q=agent.tags[-1])
    assert "helpdesk-hero" in await slugs(client, q="escalation address")
    response = await client.get("/api/marketplace/agents", params={"q": "zzqxj"})
    assert response.json() == {"data": [], "total": 0, "limit": 20, "offset": 0}
    # Punctuation-only and tsquery syntax are just text, never an error.
    for q in ["!!!", "a & | ! ( :*", "'; drop table x; --"]:
        assert (await client.get("/api/marketplace/agents", params={"q": q})).status_code == 200


async def test_detail_by_slug_and_by_id_never_shows_the_system_prompt(
    client: httpx.AsyncClient,
) -> None:
    agent = next(a for a in PUBLISHED if "openai_api_key" in a.config_schema["properties"])
    by_slug = await client.get(f"/api/marketplace/agents/{agent.slug}")
    assert by_slug.status_code == 200
    body = by_slug.json()
    by_id = await client.get(f"/api/marketplace/agents/{body['id']}")
    assert by_id.json() == body
    assert body["config_schema"] == agent.config_schema
    assert body["default_config"] == agent.default_config
    assert body["example_prompts"] == agent.example_prompts
    assert "openai_api_key" in body["secret_fields"]
    assert "system_prompt" not in body
    assert agent.system_prompt[:40] not in by_slug.text


async def test_unknown_and_unpublished_agents_are_404_except_for_admins(
    client: httpx.AsyncClient, alice: Caller, admin: Caller
) -> None:
    for ref in ["no-such-agent", str(uuid.uuid4()), UNPUBLISHED.slug]:
        response = await client.get(f"/api/marketplace/agents/{ref}", headers=alice.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "agent_not_found"
        assert response.headers["content-type"] == "application/problem+json"
    as_admin = await client.get(
        f"/api/marketplace/agents/{UNPUBLISHED.slug}", headers=admin.headers
    )
    assert as_admin.status_code == 200


async def test_categories_with_counts(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/marketplace/categories")
    expected: dict[str, int] = {}
    for a in PUBLISHED:
        expected[a.category] = expected.get(a.category, 0) + 1
    assert {c["category"]: c["count"] for c in response.json()} == expected


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 0}, "/query/limit"),
        ({"limit": 101}, "/query/limit"),
        ({"offset": -1}, "/query/offset"),
        ({"sort": "random"}, "/query/sort"),
        ({"pricing": "gratis"}, "/query/pricing"),
    ],
)
async def test_bad_query_parameters_are_422_with_pointers(
    client: httpx.AsyncClient, params: dict[str, object], path: str
) -> None:
    response = await client.get("/api/marketplace/agents", params=params)  # type: ignore[arg-type]
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_failed"
    assert [e["path"] for e in body["errors"]] == [path]


async def test_views_and_searches_are_recorded(
    app: FastAPI, client: httpx.AsyncClient, conn: psycopg.Connection, alice: Caller
) -> None:
    await client.get("/api/marketplace/agents", params={"q": "sql", "category": "engineering"})
    await client.get("/api/marketplace/agents/sql-sidekick", headers=alice.headers)
    await client.get("/api/marketplace/agents")  # plain browsing is not a search
    assert await app.state.agentmarket.events.flush() == 2
    rows = conn.execute(
        "select name, user_id, agent_id, properties from private.telemetry_events order by id"
    ).fetchall()
    assert [r[0] for r in rows] == ["marketplace.search.performed", "marketplace.agent.viewed"]
    search, view = rows
    assert search[1] is None
    assert search[3]["query"] == "sql"
    assert search[3]["results"] >= 1
    assert view[1] == alice.user.id
    assert view[3]["slug"] == "sql-sidekick"


async def test_published_answers_are_cached_and_admin_views_of_drafts_are_not(
    settings: Settings, conn: psycopg.Connection, admin: Caller
) -> None:
    application = create_app(settings.model_copy(update={"catalog_cache_seconds": 60}))
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://testserver"
        ) as cached,
    ):
        first = await cached.get("/api/marketplace/agents", params={"sort": "name"})
        detail = await cached.get("/api/marketplace/agents/sql-sidekick")
        draft = await cached.get(
            f"/api/marketplace/agents/{UNPUBLISHED.slug}", headers=admin.headers
        )
        assert draft.status_code == 200
        conn.execute("update public.marketplace_agents set tagline = 'changed' where true")
        again = await cached.get("/api/marketplace/agents", params={"sort": "name"})
        assert again.json() == first.json()  # served from the cache
        assert (await cached.get("/api/marketplace/agents/sql-sidekick")).json() == detail.json()
        # The unpublished agent was not cached: anon still gets 404, the admin sees the change.
        assert (await cached.get(f"/api/marketplace/agents/{UNPUBLISHED.slug}")).status_code == 404
        fresh = await cached.get(
            f"/api/marketplace/agents/{UNPUBLISHED.slug}", headers=admin.headers
        )
        assert fresh.json()["tagline"] == "changed"
        # Another query is not in the cache and sees the database as it is.
        other = await cached.get("/api/marketplace/agents", params={"sort": "newest"})
        assert {a["tagline"] for a in other.json()["data"]} == {"changed"}
        # Views are still recorded on cache hits.
        assert await application.state.agentmarket.events.flush() == 4


async def test_postgrest_clients_get_the_same_search(
    client: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    """anon calling rpc/search_agents (as PostgREST would) sees what the endpoint returns."""
    http = await slugs(client, q="notes", sort="name")
    with conn.transaction():
        conn.execute("set local role anon")
        conn.execute("select set_config('request.jwt.claims', '{\"role\":\"anon\"}', true)")
        rows = conn.execute("select slug from public.search_agents(q => 'notes', sort => 'name')")
        direct = [r[0] for r in rows.fetchall()]
        hidden = conn.execute(
            "select count(*) from public.search_agents(q => %s)", (UNPUBLISHED.name,)
        ).fetchone()
    assert direct == http
    assert hidden == (0,)  # not even searching by its name finds the unpublished agent
    assert UNPUBLISHED.slug not in direct


async def test_catalog_answers_carry_an_etag_and_revalidate_with_304(
    client: httpx.AsyncClient, conn: psycopg.Connection
) -> None:
    first = await client.get("/api/marketplace/agents/sql-sidekick")
    etag = first.headers["etag"]
    same = await client.get("/api/marketplace/agents/sql-sidekick", headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    conn.execute("update public.marketplace_agents set tagline = 'new' where slug = 'sql-sidekick'")
    changed = await client.get(
        "/api/marketplace/agents/sql-sidekick", headers={"If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.json()["tagline"] == "new"
    assert changed.headers["etag"] != etag
