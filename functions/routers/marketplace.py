"""Catalog and deploy: GET /api/marketplace/agents[/{id-or-slug}], /categories, POST /deploy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from agentmarket.domain.models import (
    AgentDetail,
    AgentList,
    AgentQuery,
    CategoryCount,
    Deployment,
    DeployRequest,
)
from agentmarket.services import catalog, deployments
from functions.cache import json_response, offer_cached
from functions.deps import Box, Cache, Caller, CurrentUser, Events, Rules, Signer, UserSession
from functions.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/marketplace", tags=["marketplace"])


@router.get("/agents", response_model=AgentList, responses=problem_responses(401, 422))
async def list_agents(
    request: Request,
    db: Caller,
    query: Annotated[AgentQuery, Query()],
    cache: Cache,
    events: Events,
) -> Response:
    """Browse and search the published catalog."""
    agents = await catalog.list_agents(db=db, query=query, cache=cache, events=events)
    offer_cached(request, catalog.cached_list_agents(query=query, cache=cache, events=events))
    return json_response(request, agents)


@router.get("/categories", response_model=list[CategoryCount], responses=problem_responses())
async def list_categories(request: Request, db: Caller, cache: Cache) -> Response:
    """Categories of published agents, with how many agents each has."""
    categories = await catalog.list_categories(db=db, cache=cache)
    offer_cached(request, catalog.cached_categories(cache=cache))
    return json_response(request, categories)


@router.get("/agents/{agent}", response_model=AgentDetail, responses=problem_responses(404, 422))
async def get_agent(
    request: Request,
    db: Caller,
    agent: Annotated[
        str,
        Path(
            min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$", description="Agent id or slug"
        ),
    ],
    cache: Cache,
    events: Events,
) -> Response:
    """One agent with its configuration schema and example prompts (never its system prompt)."""
    detail = await catalog.get_agent(db=db, id_or_slug=agent, cache=cache, events=events)
    offer_cached(request, catalog.cached_agent(id_or_slug=agent, cache=cache, events=events))
    return json_response(request, detail)


@router.post(
    "/deploy",
    response_model=Deployment,
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429),
)
async def deploy(
    db: UserSession,
    request: DeployRequest,
    box: Box,
    signer: Signer,
    user: CurrentUser,
    rules: Rules,
) -> Deployment:
    """Deploy an agent to your workspace with a configuration validated against its schema."""
    return await deployments.deploy_agent(
        db=db, request=request, box=box, signer=signer, user_id=user.id, rules=rules
    )
