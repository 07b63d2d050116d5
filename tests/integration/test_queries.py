"""Every named query (agentmarket/db/sql/*.sql) prepares against the migrated schema, so a renamed
column or function fails here, not in a request. The worker's are prepared as the worker's own
login; the others as the superuser (preparing checks names and types, not privileges)."""

from __future__ import annotations

import re

import psycopg
import pytest

from agentmarket.core.config import get_settings
from agentmarket.db.queries import NamedQuery, load

pytestmark = pytest.mark.db

PARAMETER = re.compile(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s|%%")
# The login each file's statements run as, when it is not the superuser.
LOGINS = {"worker.sql": "worker"}
QUERIES = sorted(load().values(), key=lambda q: q.name)


def positional(text: str) -> tuple[str, list[str]]:
    """The statement with `%(name)s` turned into `$n` (a name used twice keeps its number)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return PARAMETER.sub(number, text), names


def test_named_parameters_become_positional() -> None:
    assert positional("select %(a)s, %(b)s, %(a)s::text, '100%%'") == (
        "select $1, $2, $1::text, '100%'",
        ["a", "b"],
    )


@pytest.mark.parametrize("named", QUERIES, ids=[q.name for q in QUERIES])
def test_every_named_query_prepares(named: NamedQuery, db_url: str) -> None:
    settings = get_settings(app_env="test", database_url=db_url)
    url = settings.worker_url if LOGINS.get(named.file) == "worker" else db_url
    text, names = positional(named.text)
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(f"prepare checked as {text}")
        except psycopg.Error as exc:
            pytest.fail(f"{named.file}: {named.name} does not prepare: {exc}")
        row = conn.execute(
            "select cardinality(parameter_types) from pg_prepared_statements where name = 'checked'"
        ).fetchone()
    assert row == (len(names),), f"{named.name}: every parameter is used"
