"""Catalog and deploy: GET /api/marketplace/agents[/{id-or-slug}], /categories, POST /deploy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from agentmarket.models import (
    AgentDetail,
    AgentList,
    AgentQuery,
    CategoryCount,
    Deployment,
    DeployRequest,
)
from agentmarket.services import catalog, deployments
from functions.deps import AppSettings, Box, Cache, Caller, Events, UserConn
from functions.openapi import problem_responses

router = APIRouter(prefix="/api/marketplace", tags=["marketplace"])


@router.get("/agents", response_model=AgentList, responses=problem_responses(401, 422))
async def list_agents(
    db: Caller, query: Annotated[AgentQuery, Query()], cache: Cache, events: Events
) -> AgentList:
    """Browse and search the published catalog."""
    return await catalog.list_agents(db=db, query=query, cache=cache, events=events)


@router.get("/categories", response_model=list[CategoryCount])
async def list_categories(db: Caller, cache: Cache) -> list[CategoryCount]:
    """Categories of published agents, with how many agents each has."""
    return await catalog.list_categories(db=db, cache=cache)


@router.get("/agents/{agent}", response_model=AgentDetail, responses=problem_responses(404, 422))
async def get_agent(
    db: Caller,
    agent: Annotated[
        str,
        Path(
            min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$", description="Agent id or slug"
        ),
    ],
    cache: Cache,
    events: Events,
) -> AgentDetail:
    """One agent with its configuration schema and example prompts (never its system prompt)."""
    return await catalog.get_agent(db=db, id_or_slug=agent, cache=cache, events=events)


@router.post(
    "/deploy",
    response_model=Deployment,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 401, 404, 409, 413, 422),
)
async def deploy(
    conn: UserConn, request: DeployRequest, box: Box, settings: AppSettings
) -> Deployment:
    """Deploy an agent to your workspace with a configuration validated against its schema."""
    return await deployments.deploy_agent(
        conn=conn, request=request, box=box, max_active=settings.max_active_deployments
    )
