"""The satisfaction survey: a user's answer about the marketplace or one of their deployments
(one each; a new answer replaces the old one) and whether the client should ask for one.

All as the caller under RLS (queries in agentmarket/db/sql/survey.sql). The answer and its
`marketplace.survey.submitted` event are written in the request's transaction; the event carries
the scores and whether there is a comment, never the comment's text.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from psycopg.rows import dict_row

from agentmarket.core.errors import DeploymentNotFound
from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.domain.models import SurveyAnswer, SurveyRequest, SurveyStatus
from agentmarket.services.telemetry import track

__all__ = ["Submitted", "submit", "survey_status"]


@dataclass(frozen=True)
class Submitted:
    answer: SurveyAnswer
    created: bool  # false: it replaced the caller's earlier answer


async def submit(*, db: CallerSession, request: SurveyRequest) -> Submitted:
    """Store the caller's answer (`DeploymentNotFound` when the deployment is not one of their
    live ones) and record the event."""
    conn = await db.conn()
    agent_id: uuid.UUID | None = None
    async with conn.cursor(row_factory=dict_row) as cur:
        if request.deployment_id is not None:
            await cur.execute(query("survey_deployment"), {"deployment_id": request.deployment_id})
            deployment = await cur.fetchone()
            if deployment is None:
                raise DeploymentNotFound()
            agent_id = deployment["agent_id"]
        await cur.execute(
            query("survey_upsert"),
            {
                "deployment_id": request.deployment_id,
                "satisfaction": request.satisfaction,
                "ease_of_use": request.ease_of_use,
                "likelihood_to_recommend": request.likelihood_to_recommend,
                "comment": request.comment,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    created = bool(row.pop("created"))
    await track(
        "marketplace.survey.submitted",
        db=db,
        agent_id=agent_id,
        deployment_id=request.deployment_id,
        satisfaction=request.satisfaction,
        ease_of_use=request.ease_of_use,
        likelihood_to_recommend=request.likelihood_to_recommend,
        has_comment=bool(request.comment),
        replaced=not created,
    )
    return Submitted(answer=SurveyAnswer.model_validate(row), created=created)


async def survey_status(*, db: CallerSession) -> SurveyStatus:
    """Whether (and when) the caller answered; ask only those who have not and have had at least
    one completed reply."""
    rows = await db.run(query("survey_status"), {})
    row = rows[0]
    answered = row["answered_at"] is not None
    return SurveyStatus(
        answered=answered,
        answered_at=row["answered_at"],
        should_ask=not answered and bool(row["has_completed_reply"]),
    )
