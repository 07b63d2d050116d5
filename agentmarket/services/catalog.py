"""The catalog: list/search, detail, categories.

Queries run as the caller, so RLS decides what is visible. Published rows are visible to every
caller alike, so answers made only of published rows are cached in-process for a few seconds
(`CatalogCache`, of models: the HTTP layer renders each cached model once): a cache hit answers
without touching the database. Views and searches are recorded through the batched `EventSink`
on every call, hits included.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from cachetools import TTLCache
from psycopg.rows import dict_row
from pydantic import RootModel

from agentmarket.core.errors import AgentNotFound
from agentmarket.db import queries
from agentmarket.db.caller import CallerSession
from agentmarket.domain import configschema
from agentmarket.domain.models import (
    AgentDetail,
    AgentList,
    AgentQuery,
    AgentSummary,
    CategoryCount,
)
from agentmarket.services.telemetry import EventSink

__all__ = [
    "CatalogCache",
    "CategoryList",
    "agent_key",
    "get_agent",
    "list_agents",
    "list_categories",
]


class CategoryList(RootModel[list[CategoryCount]]):
    pass


class CatalogCache:
    """Published-catalog answers (models) for `ttl` seconds (0 disables caching)."""

    def __init__(self, ttl: float, maxsize: int = 2048) -> None:
        self.enabled = ttl > 0
        self._entries: TTLCache[tuple[Any, ...], Any] = TTLCache(
            maxsize=maxsize, ttl=max(ttl, 0.001), timer=time.monotonic
        )

    def get(self, key: tuple[Any, ...]) -> Any:
        return self._entries.get(key) if self.enabled else None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        if self.enabled:
            self._entries[key] = value

    def clear(self) -> None:
        self._entries.clear()


def agent_key(id_or_slug: str) -> dict[str, Any]:
    """Query parameters for an agent named by uuid or by slug."""
    try:
        return {"id": uuid.UUID(id_or_slug), "slug": None}
    except ValueError:
        return {"id": None, "slug": id_or_slug.strip().lower()}


async def _search(db: CallerSession, query: AgentQuery, params: dict[str, Any]) -> AgentList:
    conn = await db.conn()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.query("catalog_search_agents"), params)
        rows = await cur.fetchall()
    if rows:
        total = int(rows[0]["total_count"])
    elif query.offset:
        # A page past the end has no window count: count separately.
        async with conn.cursor() as cur:
            await cur.execute(queries.query("catalog_count_agents"), params)
            row = await cur.fetchone()
            total = int(row[0]) if row else 0
    else:
        total = 0
    return AgentList(
        data=[
            AgentSummary.model_validate({k: v for k, v in r.items() if k != "total_count"})
            for r in rows
        ],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )


async def list_agents(
    *, db: CallerSession, query: AgentQuery, cache: CatalogCache, events: EventSink
) -> AgentList:
    params = query.model_dump(mode="json")
    key = ("list", *sorted(params.items()))
    result: AgentList | None = cache.get(key)
    if result is None:
        result = await _search(db, query, params)
        cache.put(key, result)  # search_agents returns published rows only: same for everyone
    if query.q or query.category or query.pricing or query.tag:
        events.record(
            "marketplace.search.performed",
            user_id=db.user_id,
            query=query.q,
            category=query.category,
            pricing=query.pricing.value if query.pricing else None,
            tag=query.tag,
            sort=query.sort.value if query.sort else None,
            results=result.total,
        )
    return result


async def get_agent(
    *, db: CallerSession, id_or_slug: str, cache: CatalogCache, events: EventSink
) -> AgentDetail:
    params = agent_key(id_or_slug)
    key = ("agent", params["id"], params["slug"])
    detail: AgentDetail | None = cache.get(key)
    if detail is None:
        conn = await db.conn()
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries.query("catalog_agent_detail"), params)
            row = await cur.fetchone()
        if row is None:
            raise AgentNotFound()
        published = row.pop("is_published")
        detail = AgentDetail.model_validate(
            {**row, "secret_fields": sorted(configschema.secret_fields(row["config_schema"]))}
        )
        if published:  # an admin's view of an unpublished agent is never shared
            cache.put(key, detail)
    events.record(
        "marketplace.agent.viewed",
        user_id=db.user_id,
        agent_id=detail.id,
        slug=detail.slug,
        category=detail.category,
    )
    return detail


async def list_categories(*, db: CallerSession, cache: CatalogCache) -> CategoryList:
    categories: CategoryList | None = cache.get(("categories",))
    if categories is None:
        conn = await db.conn()
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries.query("catalog_categories"))
            rows = await cur.fetchall()
        categories = CategoryList([CategoryCount.model_validate(r) for r in rows])
        cache.put(("categories",), categories)
    return categories
