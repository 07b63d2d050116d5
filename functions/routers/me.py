"""About the signed-in caller: their limits and usage."""

from __future__ import annotations

from fastapi import APIRouter

from agentmarket.domain.models import UsageReport
from agentmarket.services import usage
from functions.deps import UserSession
from functions.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/me", tags=["usage"])


@router.get("/usage", response_model=UsageReport, responses=problem_responses(401))
async def get_usage(db: UserSession) -> UsageReport:
    """Your limits and where you stand: the chat quota (nothing taken), replies in flight,
    deployments against their caps, platform-key tokens today and this month's messages and
    tokens."""
    return await usage.my_usage(db=db)
