"""Fixtures: a fresh database per test, cloned from the migrated, seeded template that
./scripts/test builds on its throwaway cluster (AGENTMARKET_TEST_ADMIN_URL and
AGENTMARKET_TEST_TEMPLATE).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@dataclass(frozen=True)
class Server:
    admin_url: str
    template: str

    def url_for(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_url)
        params["dbname"] = dbname
        return make_conninfo(**params)  # type: ignore[arg-type]

    def uri_for(self, dbname: str) -> str:
        """A postgresql:// URI (for tools that only take URIs)."""
        p = conninfo_to_dict(self.admin_url)
        return (
            f"postgresql://{p.get('user', 'postgres')}:{p.get('password', '')}"
            f"@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{dbname}"
        )

    def create(self, *, template: str | None = None) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("create database {} template {}").format(
                    sql.Identifier(name), sql.Identifier(template or self.template)
                )
            )
        return name

    def drop(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_server() -> Server:
    admin_url = os.environ.get("AGENTMARKET_TEST_ADMIN_URL")
    template = os.environ.get("AGENTMARKET_TEST_TEMPLATE")
    if not admin_url or not template:
        pytest.fail(
            "database tests need the throwaway cluster: run them through ./scripts/test "
            "(it sets AGENTMARKET_TEST_ADMIN_URL and AGENTMARKET_TEST_TEMPLATE)"
        )
    return Server(admin_url=admin_url, template=template)


@pytest.fixture
def db_name(pg_server: Server) -> Iterator[str]:
    """A fresh database migrated and seeded (a clone of the template)."""
    name = pg_server.create()
    yield name
    pg_server.drop(name)


@pytest.fixture
def db_url(pg_server: Server, db_name: str) -> str:
    return pg_server.uri_for(db_name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    """A superuser autocommit connection to the fresh database."""
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@pytest.fixture
def empty_db_url(pg_server: Server) -> Iterator[str]:
    """A brand-new, empty database (nothing applied)."""
    name = pg_server.create(template="template0")
    yield pg_server.uri_for(name)
    pg_server.drop(name)
