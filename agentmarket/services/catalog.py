"""The catalog: list/search, detail, categories. Runs as the caller; RLS decides what is visible."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentmarket import configschema
from agentmarket.errors import AgentNotFound
from agentmarket.models import AgentDetail, AgentList, AgentQuery, AgentSummary, CategoryCount
from agentmarket.telemetry import track

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
       rate_limit_per_minute, config_schema, default_config, example_prompts
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


def agent_key(id_or_slug: str) -> dict[str, Any]:
    """Query parameters for an agent named by uuid or by slug."""
    try:
        return {"id": uuid.UUID(id_or_slug), "slug": None}
    except ValueError:
        return {"id": None, "slug": id_or_slug.strip().lower()}


async def list_agents(*, conn: psycopg.AsyncConnection, query: AgentQuery) -> AgentList:
    params = query.model_dump(mode="json")
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SEARCH_AGENTS, params)
        rows = await cur.fetchall()
    if rows:
        total = int(rows[0]["total_count"])
    elif query.offset:
        # A page past the end: the window count is not available, count separately.
        async with conn.cursor() as cur:
            await cur.execute(COUNT_AGENTS, params)
            row = await cur.fetchone()
            total = int(row[0]) if row else 0
    else:
        total = 0
    if query.q or query.category or query.pricing or query.tag:
        await track(
            conn,
            "marketplace.search.performed",
            query=query.q,
            category=query.category,
            pricing=query.pricing.value if query.pricing else None,
            tag=query.tag,
            sort=query.sort.value if query.sort else None,
            results=total,
        )
    return AgentList(
        data=[
            AgentSummary.model_validate({k: v for k, v in r.items() if k != "total_count"})
            for r in rows
        ],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )


async def get_agent(*, conn: psycopg.AsyncConnection, id_or_slug: str) -> AgentDetail:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(AGENT_DETAIL, agent_key(id_or_slug))
        row = await cur.fetchone()
    if row is None:
        raise AgentNotFound()
    detail = AgentDetail.model_validate(
        {**row, "secret_fields": sorted(configschema.secret_fields(row["config_schema"]))}
    )
    await track(
        conn,
        "marketplace.agent.viewed",
        agent_id=detail.id,
        slug=detail.slug,
        category=detail.category,
    )
    return detail


async def list_categories(*, conn: psycopg.AsyncConnection) -> list[CategoryCount]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(CATEGORIES)
        return [CategoryCount.model_validate(r) for r in await cur.fetchall()]
