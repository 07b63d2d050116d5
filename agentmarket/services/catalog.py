"""The catalog: list/search, detail, categories.

Queries run as the caller, so RLS decides what is visible. Published rows are visible to every
caller alike, so results made only of published rows are cached in-process for a few seconds
(`CatalogCache`): a cache hit answers without touching the database. Views and searches are
recorded through the batched `EventSink`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cachetools import TTLCache
from psycopg.rows import dict_row
from pydantic import BaseModel, RootModel

from agentmarket.core.errors import AgentNotFound
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

M = TypeVar("M", bound=BaseModel)


class CategoryList(RootModel[list[CategoryCount]]):
    pass


SEARCH_AGENTS = """
select id, slug, name, tagline, description, category, tags, kind, pricing_model, price_cents,
       currency, icon, featured, deploy_count, created_at, updated_at, total_count
  from public.search_agents(
         q => %(q)s, category => %(category)s, pricing => %(pricing)s, tag => %(tag)s,
         sort => %(sort)s, max_results => %(limit)s, skip => %(offset)s)
"""

COUNT_AGENTS = """
select coalesce(max(total_count), 0)
  from public.search_agents(
         q => %(q)s, category => %(category)s, pricing => %(pricing)s, tag => %(tag)s,
         max_results => 1, skip => 0)
"""

AGENT_DETAIL = """
select id, slug, name, tagline, description, category, tags, kind, pricing_model, price_cents,
       currency, icon, featured, deploy_count, created_at, updated_at, model,
       rate_limit_per_minute, config_schema, default_config, example_prompts, is_published
  from public.marketplace_agents
 where id = %(id)s or slug = %(slug)s
"""

CATEGORIES = """
select category, count(*) as count
  from public.marketplace_agents
 where is_published
 group by category
 order by category
"""


@dataclass(frozen=True)
class Rendered(Generic[M]):
    """A catalog answer and its JSON, rendered once and served as is while cached."""

    model: M
    body: bytes
    etag: str

    @classmethod
    def of(cls, model: M) -> Rendered[M]:
        body = model.model_dump_json().encode() if isinstance(model, BaseModel) else b""
        return cls(model, body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


class CatalogCache:
    """Published-catalog answers for `ttl` seconds (0 disables caching)."""

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


async def list_agents(
    *, db: CallerSession, query: AgentQuery, cache: CatalogCache, events: EventSink
) -> Rendered[AgentList]:
    params = query.model_dump(mode="json")
    key = ("list", *sorted(params.items()))
    result: Rendered[AgentList] | None = cache.get(key)
    if result is None:
        conn = await db.conn()
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SEARCH_AGENTS, params)
            rows = await cur.fetchall()
        if rows:
            total = int(rows[0]["total_count"])
        elif query.offset:
            # A page past the end has no window count: count separately.
            async with conn.cursor() as cur:
                await cur.execute(COUNT_AGENTS, params)
                row = await cur.fetchone()
                total = int(row[0]) if row else 0
        else:
            total = 0
        result = Rendered.of(
            AgentList(
                data=[
                    AgentSummary.model_validate({k: v for k, v in r.items() if k != "total_count"})
                    for r in rows
                ],
                total=total,
                limit=query.limit,
                offset=query.offset,
            )
        )
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
            results=result.model.total,
        )
    return result


async def get_agent(
    *, db: CallerSession, id_or_slug: str, cache: CatalogCache, events: EventSink
) -> Rendered[AgentDetail]:
    params = agent_key(id_or_slug)
    key = ("agent", params["id"], params["slug"])
    detail: Rendered[AgentDetail] | None = cache.get(key)
    if detail is None:
        conn = await db.conn()
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(AGENT_DETAIL, params)
            row = await cur.fetchone()
        if row is None:
            raise AgentNotFound()
        published = row.pop("is_published")
        detail = Rendered.of(
            AgentDetail.model_validate(
                {**row, "secret_fields": sorted(configschema.secret_fields(row["config_schema"]))}
            )
        )
        if published:  # an admin's view of an unpublished agent is never shared
            cache.put(key, detail)
    events.record(
        "marketplace.agent.viewed",
        user_id=db.user_id,
        agent_id=detail.model.id,
        slug=detail.model.slug,
        category=detail.model.category,
    )
    return detail


async def list_categories(*, db: CallerSession, cache: CatalogCache) -> Rendered[CategoryList]:
    categories: Rendered[CategoryList] | None = cache.get(("categories",))
    if categories is None:
        conn = await db.conn()
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(CATEGORIES)
            rows = await cur.fetchall()
        categories = Rendered.of(CategoryList([CategoryCount.model_validate(r) for r in rows]))
        cache.put(("categories",), categories)
    return categories
