"""20261130181000_survey_one_answer.sql on a database that already holds duplicate answers (the
schema before it allowed any number per user and deployment): each (user, deployment) keeps its
newest answer, the users' general answers (deployment_id null) counting as one key, and the
unique index then holds."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from agentmarket.cli import main
from agentmarket.core import paths

pytestmark = pytest.mark.db

VERSION = "20261130181000"


def test_duplicate_answers_fold_into_the_newest_one(
    empty_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    monkeypatch.delenv("DATABASE_DIRECT_URL", raising=False)
    before = tmp_path / "before"
    before.mkdir()
    for path in paths.migrations_dir().glob("*.sql"):
        if path.name < VERSION:
            shutil.copy(path, before / path.name)
    assert main(["migrate", "up", "--dir", str(before)]) == 0

    a, b = uuid.uuid4(), uuid.uuid4()
    agent, deployment = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "insert into auth.users (id, email)"
            " values (%s, 'a@example.test'), (%s, 'b@example.test')",
            (a, b),
        )
        conn.execute(
            "insert into public.marketplace_agents (id, slug, name, category, kind, pricing_model,"
            " is_published) values (%s, 'm-agent', 'M', 'testing', 'chat', 'free', true)",
            (agent,),
        )
        conn.execute(
            "insert into public.agent_deployments (id, user_id, agent_id, name)"
            " values (%s, %s, %s, 'A live')",
            (deployment, a, agent),
        )
        # (user, deployment, satisfaction, days ago): A three general answers and two about the
        # deployment, B one general answer.
        for user, about, score, days in (
            (a, None, 1, 3),
            (a, None, 2, 1),
            (a, None, 3, 2),
            (a, deployment, 4, 5),
            (a, deployment, 5, 4),
            (b, None, 1, 9),
        ):
            conn.execute(
                "insert into public.survey_responses (user_id, deployment_id, satisfaction,"
                " ease_of_use, likelihood_to_recommend, created_at)"
                " values (%s, %s, %s, 3, 5, now() - make_interval(days => %s))",
                (user, about, score, days),
            )

    capsys.readouterr()
    assert main(["migrate", "up"]) == 0
    assert f"applied {VERSION}_survey_one_answer.sql" in capsys.readouterr().out

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        kept = conn.execute(
            "select user_id, deployment_id, satisfaction, updated_at = created_at"
            " from public.survey_responses order by user_id = %s desc, deployment_id nulls first",
            (a,),
        ).fetchall()
        assert kept == [(a, None, 2, True), (a, deployment, 5, True), (b, None, 1, True)]
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "insert into public.survey_responses (user_id, satisfaction, ease_of_use,"
                " likelihood_to_recommend) values (%s, 3, 3, 3)",
                (b,),
            )
