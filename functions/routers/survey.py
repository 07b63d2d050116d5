"""The satisfaction survey: POST /api/marketplace/survey (answer, or change your answer) and
GET /api/marketplace/survey (whether you answered; the client asks once, after the first
completed chat)."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from agentmarket.domain.models import SurveyAnswer, SurveyRequest, SurveyStatus
from agentmarket.services import survey
from functions.deps import UserSession
from functions.openapi import problem_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/marketplace", tags=["survey"])


@router.post(
    "/survey",
    response_model=SurveyAnswer,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": SurveyAnswer, "description": "Your earlier answer, changed"},
        **problem_responses(400, 401, 404, 413, 415, 422),
    },
)
async def answer_survey(db: UserSession, body: SurveyRequest) -> JSONResponse:
    """Answer the survey about the marketplace or one of your deployments (`deployment_id`).
    One answer each: answering again replaces it (200 instead of 201)."""
    submitted = await survey.submit(db=db, request=body)
    return JSONResponse(
        submitted.answer.model_dump(mode="json"),
        status_code=status.HTTP_201_CREATED if submitted.created else status.HTTP_200_OK,
    )


@router.get("/survey", response_model=SurveyStatus, responses=problem_responses(401))
async def survey_status(db: UserSession) -> SurveyStatus:
    """Whether you answered the survey, and whether the client should ask now."""
    return await survey.survey_status(db=db)
