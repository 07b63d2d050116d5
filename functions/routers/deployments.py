"""Your deployments: list, detail, rename/reconfigure/pause/resume, delete."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from agentmarket.domain.models import Deployment, DeploymentList, DeploymentPatch
from agentmarket.services import deployments
from functions.deps import Box, CurrentUser, Rules, Signer, UserSession
from functions.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/deployments", tags=["deployments"])


@router.get("", response_model=DeploymentList, responses=problem_responses(401))
async def list_deployments(db: UserSession) -> DeploymentList:
    """Your live deployments, newest first."""
    return await deployments.list_deployments(db=db)


@router.get(
    "/{deployment_id}", response_model=Deployment, responses=problem_responses(401, 404, 422)
)
async def get_deployment(db: UserSession, deployment_id: uuid.UUID) -> Deployment:
    """One of your deployments (secrets masked)."""
    return await deployments.get_deployment(db=db, deployment_id=deployment_id)


@router.patch(
    "/{deployment_id}",
    response_model=Deployment,
    responses=problem_responses(400, 401, 404, 409, 413, 422, 429),
)
async def update_deployment(
    db: UserSession,
    deployment_id: uuid.UUID,
    patch: DeploymentPatch,
    box: Box,
    signer: Signer,
    user: CurrentUser,
    rules: Rules,
) -> Deployment:
    """Rename, reconfigure (secrets left out keep their value), pause or resume."""
    return await deployments.update_deployment(
        db=db,
        deployment_id=deployment_id,
        patch=patch,
        box=box,
        signer=signer,
        user_id=user.id,
        rules=rules,
    )


@router.delete(
    "/{deployment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(401, 404, 422),
)
async def delete_deployment(db: UserSession, deployment_id: uuid.UUID) -> Response:
    """Delete the deployment; its stored secrets are destroyed."""
    await deployments.delete_deployment(db=db, deployment_id=deployment_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
