"""The named queries (agentmarket/db/sql/*.sql) against the migrated schema, as the role that runs
them: each one prepares (names resolve, parameters type, every parameter is used) and plans with
that role's privileges; each name the code asks for exists, each query is asked for, and no SQL
text is left in the services, the routes or the worker outside its job store. A renamed column
or a revoked grant fails here, not in a request."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from agentmarket.core import paths
from agentmarket.core.config import get_settings
from agentmarket.db.caller import set_caller
from agentmarket.db.queries import NamedQuery, load, query

ROOT = Path(paths.__file__).resolve().parents[2]

# Who runs each file's queries: the caller's role through the API login (None: the API login
# itself, outside any caller's transaction; "worker": the worker's own login).
ROLES: dict[str, tuple[str | None, ...]] = {
    "worker.sql": ("worker",),
    "catalog.sql": ("anon", "authenticated"),
    "chat.sql": ("authenticated",),
    "deployments.sql": ("authenticated",),
    "health.sql": (None,),
    "survey.sql": ("authenticated",),
    "telemetry.sql": ("anon", "authenticated"),  # EventSink writes anonymous events as anon
    "usage.sql": ("authenticated",),
    "analytics.sql": ("authenticated",),  # admins are authenticated users with app_metadata.role
}

_NAMED = re.compile(r"%\(([a-z_][a-z0-9_]*)\)s")
_USED = re.compile(r"\bquery\(\s*\"([a-z][a-z0-9_]*)\"\s*\)")
_SQL = re.compile(
    r"^\s*(select|insert|update|delete|with)\s.*\b(from|into|set|values|returning)\b|"
    r"^\s*select\s+[\w.*]+\s*\(",
    re.I | re.S,
)


def all_queries() -> list[NamedQuery]:
    return sorted(load().values(), key=lambda named: named.name)


def to_dollars(text: str) -> tuple[str, int]:
    """The text with `%(name)s` as `$n` (a repeated name keeps its number, as psycopg binds it)
    and `%%` as `%`; the number of parameters."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return _NAMED.sub(number, text).replace("%%", "%"), len(numbers)


def python_sources() -> Iterator[Path]:
    for package in ("agentmarket", "functions", "workers"):
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_file_says_who_runs_it() -> None:
    files = {named.file for named in load().values()}
    assert files == set(ROLES)


def test_named_parameters_become_numbered() -> None:
    assert to_dollars("select %(a)s, %(b)s, %(a)s::text, '100%%'") == (
        "select $1, $2, $1::text, '100%'",
        2,
    )


@pytest.mark.parametrize("named", all_queries(), ids=lambda named: named.name)
def test_the_query_binds_only_named_parameters(named: NamedQuery) -> None:
    stripped = _NAMED.sub("", named.text).replace("%%", "")
    assert "%" not in stripped, f"{named.name}: a positional or malformed placeholder"


@pytest.mark.db
@pytest.mark.parametrize("named", all_queries(), ids=lambda named: named.name)
def test_the_query_prepares_and_plans_as_its_role(db_url: str, named: NamedQuery) -> None:
    text, count = to_dollars(named.text)
    settings = get_settings(app_env="test", database_url=db_url)
    worker = ROLES[named.file] == ("worker",)
    url = settings.worker_url if worker else settings.api_url
    with psycopg.connect(url, autocommit=True) as conn:
        for role in ROLES[named.file]:
            with conn.transaction(force_rollback=True):
                if role not in (None, "worker"):
                    claims = {"role": role}
                    if role == "authenticated":
                        claims["sub"] = "00000000-0000-4000-8000-000000000001"
                    conn.execute(set_caller(claims))
                conn.execute(sql.SQL("prepare api_query as {}").format(sql.SQL(text)))
                prepared = conn.execute(
                    "select cardinality(parameter_types) from pg_prepared_statements"
                    " where name = 'api_query'"
                ).fetchone()
                assert prepared == (count,), f"{named.name}: every parameter is used"
                # Planning as the role checks its privileges on every table and function used;
                # nothing runs.
                nulls = sql.SQL(", ").join([sql.NULL] * count)
                execute = (
                    sql.SQL("explain execute api_query({})").format(nulls)
                    if count
                    else sql.SQL("explain execute api_query")
                )
                conn.execute(execute)
                conn.execute("deallocate api_query")


def test_every_query_the_code_names_exists() -> None:
    defined = load()
    for path in python_sources():
        for name in _USED.findall(path.read_text(encoding="utf-8")):
            assert name in defined, f"{path.relative_to(ROOT)} uses undefined query {name!r}"


def test_every_query_is_used() -> None:
    used = {
        name
        for path in python_sources()
        for name in _USED.findall(path.read_text(encoding="utf-8"))
    }
    unused = sorted(named.name for named in all_queries() if named.name not in used)
    assert unused == []


def test_no_sql_text_is_left_in_the_services_the_routes_or_the_worker() -> None:
    for package in (ROOT / "agentmarket" / "services", ROOT / "functions", ROOT / "workers"):
        for path in sorted(package.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    assert not _SQL.search(node.value), (
                        f"SQL text in {path.relative_to(ROOT)}: {node.value[:60]!r}"
                    )


def test_query_names_the_missing_query() -> None:
    with pytest.raises(KeyError, match="no_such_query"):
        query("no_such_query")
