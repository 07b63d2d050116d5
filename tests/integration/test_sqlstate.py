"""The SQLSTATE registry covers every code the database raises, and maps each to its error."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from agentmarket.core import errors
from agentmarket.core.config import get_settings
from agentmarket.core.paths import migrations_dir
from agentmarket.db import sqlstate
from agentmarket.db.caller import as_caller
from agentmarket.db.pool import create_pool
from agentmarket.ops.tokens import ensure_user

# `raise … using errcode = 'AM…'`, or a refusal by a limit: `private.raise_limit('AM…', …)`.
OUR_CODE = re.compile(r"(?:errcode\s*=\s*|raise_limit\(\s*)'(AM[A-Z0-9]{3})'")


def _raised_in_migrations() -> set[str]:
    return {
        code
        for path in migrations_dir().glob("*.sql")
        for code in OUR_CODE.findall(path.read_text(encoding="utf-8"))
    }


def test_every_code_the_migrations_raise_is_registered() -> None:
    raised = _raised_in_migrations()
    registered = set(sqlstate.APP_ERRORS) | set(sqlstate.INTERNAL)
    assert raised == registered, (
        f"unregistered: {raised - registered}, unused: {registered - raised}"
    )
    assert not set(sqlstate.APP_ERRORS) & set(sqlstate.INTERNAL)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("AMNF1", errors.AgentNotFound),
        ("AMNF2", errors.DeploymentNotFound),
        ("AMNF3", errors.ConversationNotFound),
        ("AMNF4", errors.MessageNotFound),
        ("AMPAU", errors.DeploymentPaused),
        ("AMLIM", errors.DeploymentLimitReached),
        ("AMCFG", errors.DeploymentNotConfigured),
    ],
)
def test_codes_become_their_errors(code: str, error: type[errors.AppError]) -> None:
    exc = psycopg.Error()
    exc.sqlstate = code
    mapped = sqlstate.app_error(exc)
    assert type(mapped) is error


def test_other_codes_stay_database_errors() -> None:
    for code in ("AMSIG", "23505", None):
        exc = psycopg.Error()
        exc.sqlstate = code
        assert sqlstate.app_error(exc) is None
        with pytest.raises(psycopg.Error), sqlstate.app_errors():
            raise exc


@pytest.mark.db
async def test_a_caller_transaction_raises_the_mapped_error(
    db_url: str, conn: psycopg.Connection
) -> None:
    """Through the real function, as the API login: a send to a deployment that is not the
    caller's raises AMNF2, which the caller's transaction turns into DeploymentNotFound."""
    user = ensure_user(conn, email=f"{uuid.uuid4().hex[:8]}@example.com")
    settings = get_settings(app_env="test", database_url=db_url, supabase_url=None)
    pool = create_pool(settings, min_size=1, max_size=2)
    await pool.open(wait=True)
    try:
        with pytest.raises(errors.DeploymentNotFound):
            async with as_caller(pool, {"sub": str(user.id), "role": "authenticated"}) as c:
                await c.execute(
                    "select * from private.send_chat_message(%s, null, 'hi', null, null)",
                    (uuid.uuid4(),),
                )
    finally:
        await pool.close()
