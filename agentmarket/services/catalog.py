"""The catalog: list/search, detail, categories.

Queries run as the caller, so RLS decides what is visible. Published rows are visible to every
caller alike, so answers made only of published rows are cached in-process for a few seconds
(`CatalogCache`, of models: the HTTP layer renders each cached model once): a cache hit answers
without touching the database. Concurrent misses of one key wait for the first one's query
instead of each running their own (no burst of identical queries each time an entry expires
under load). Views and searches are recorded through the batched `EventSink` on every call, hits
included.

`cached_list_agents`, `cached_agent` and `cached_categories` make the same answer for a query
already parsed, from the cache alone (None when it is not cached): the HTTP layer uses them to
answer repeated anonymous GETs without routing them again (docs/architecture.md#http-functions).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
    "cached_agent",
    "cached_categories",
    "cached_list_agents",
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
        # Keys being loaded: the lock and how many requests hold or wait for it.
        self._loading: dict[tuple[Any, ...], tuple[asyncio.Lock, list[int]]] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        return self._entries.get(key) if self.enabled else None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        if self.enabled:
            self._entries[key] = value

    def clear(self) -> None:
        self._entries.clear()

    @asynccontextmanager
    async def loading(self, key: tuple[Any, ...]) -> AsyncIterator[None]:
        """One loader of `key` at a time: a request that missed waits here for the one already
        loading it, then looks in the cache again (and loads it itself only if that one's
        answer was not cacheable, or failed). Does nothing while caching is off."""
        if not self.enabled:
            yield
            return
        entry = self._loading.get(key)
        if entry is None:
            entry = self._loading[key] = (asyncio.Lock(), [0])
        lock, holders = entry
        holders[0] += 1
        try:
            async with lock:
                yield
        finally:
            holders[0] -= 1
            if not holders[0]:
                del self._loading[key]

    def loads_in_progress(self) -> int:
        return len(self._loading)


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


def _list_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return ("list", *sorted(params.items()))


async def list_agents(
    *, db: CallerSession, query: AgentQuery, cache: CatalogCache, events: EventSink
) -> AgentList:
    params = query.model_dump(mode="json")
    key = _list_key(params)
    result: AgentList | None = cache.get(key)
    if result is None:
        async with cache.loading(key):
            result = cache.get(key)
            if result is None:
                result = await _search(db, query, params)
                # search_agents returns published rows only: the same for everyone
                cache.put(key, result)
    _record_search(events, query, result, db.user_id)
    return result


def cached_list_agents(
    *, query: AgentQuery, cache: CatalogCache, events: EventSink
) -> Callable[[], AgentList | None]:
    """`list_agents` for an anonymous caller, from the cache alone."""
    key = _list_key(query.model_dump(mode="json"))

    def answer() -> AgentList | None:
        result: AgentList | None = cache.get(key)
        if result is not None:
            _record_search(events, query, result, None)
        return result

    return answer


def _record_search(
    events: EventSink, query: AgentQuery, result: AgentList, user_id: str | None
) -> None:
    if query.q or query.category or query.pricing or query.tag:
        events.record(
            "marketplace.search.performed",
            user_id=user_id,
            query=query.q,
            category=query.category,
            pricing=query.pricing.value if query.pricing else None,
            tag=query.tag,
            sort=query.sort.value if query.sort else None,
            results=result.total,
        )


async def get_agent(
    *, db: CallerSession, id_or_slug: str, cache: CatalogCache, events: EventSink
) -> AgentDetail:
    params = agent_key(id_or_slug)
    key = _agent_cache_key(params)
    detail: AgentDetail | None = cache.get(key)
    if detail is None:
        async with cache.loading(key):
            detail = cache.get(key)
            if detail is None:
                detail, published = await _agent_detail(db, params)
                if published:  # an admin's view of an unpublished agent is never shared
                    cache.put(key, detail)
    _record_view(events, detail, db.user_id)
    return detail


def _agent_cache_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return ("agent", params["id"], params["slug"])


async def _agent_detail(db: CallerSession, params: dict[str, Any]) -> tuple[AgentDetail, bool]:
    """The agent as the caller sees it, and whether it is published (AgentNotFound if hidden)."""
    conn = await db.conn()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.query("catalog_agent_detail"), params)
        row = await cur.fetchone()
    if row is None:
        raise AgentNotFound()
    published = bool(row.pop("is_published"))
    detail = AgentDetail.model_validate(
        {**row, "secret_fields": sorted(configschema.secret_fields(row["config_schema"]))}
    )
    return detail, published


def cached_agent(
    *, id_or_slug: str, cache: CatalogCache, events: EventSink
) -> Callable[[], AgentDetail | None]:
    """`get_agent` for an anonymous caller, from the cache alone."""
    key = _agent_cache_key(agent_key(id_or_slug))

    def answer() -> AgentDetail | None:
        detail: AgentDetail | None = cache.get(key)
        if detail is not None:
            _record_view(events, detail, None)
        return detail

    return answer


def _record_view(events: EventSink, detail: AgentDetail, user_id: str | None) -> None:
    events.record(
        "marketplace.agent.viewed",
        user_id=user_id,
        agent_id=detail.id,
        slug=detail.slug,
        category=detail.category,
    )


async def list_categories(*, db: CallerSession, cache: CatalogCache) -> CategoryList:
    categories: CategoryList | None = cache.get(_CATEGORIES)
    if categories is None:
        async with cache.loading(_CATEGORIES):
            categories = cache.get(_CATEGORIES)
            if categories is None:
                conn = await db.conn()
                async with conn.cursor(row_factory=dict_row) as cur:
                    await cur.execute(queries.query("catalog_categories"))
                    rows = await cur.fetchall()
                categories = CategoryList([CategoryCount.model_validate(r) for r in rows])
                cache.put(_CATEGORIES, categories)
    return categories


_CATEGORIES: tuple[Any, ...] = ("categories",)


def cached_categories(*, cache: CatalogCache) -> Callable[[], CategoryList | None]:
    """`list_categories` from the cache alone."""

    def answer() -> CategoryList | None:
        categories: CategoryList | None = cache.get(_CATEGORIES)
        return categories

    return answer
