"""The processes' least-privilege logins, over real connections (password auth, as the API and the
worker log in): the API login can only become anon or authenticated and holds nothing itself; the
worker login works as service_role and is no superuser. (The pgTAP twin is
supabase/tests/database/11_logins.test.sql.)"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from agentmarket.core import paths
from agentmarket.core.config import Settings, get_settings
from agentmarket.ops import migrate

pytestmark = pytest.mark.db


@pytest.fixture
def settings(db_url: str) -> Settings:
    return get_settings(app_env="test", database_url=db_url)


def denied(conn: psycopg.Connection, statement: str) -> bool:
    """True when the statement is refused for lack of privilege (42501). Autocommit: the
    statement is its own transaction (ALTER SYSTEM refuses to run inside one)."""
    try:
        conn.execute(statement)
    except errors.InsufficientPrivilege:
        return True
    return False


def test_the_api_login_can_only_become_anon_or_authenticated(settings: Settings) -> None:
    with psycopg.connect(settings.api_url, autocommit=True) as conn:
        assert conn.execute("select session_user, current_user").fetchone() == (
            "agentmarket_api",
            "agentmarket_api",
        )
        for target in ("service_role", "postgres", "agentmarket_worker", "authenticator"):
            assert denied(conn, f"set role {target}"), target
        assert denied(conn, "set session authorization postgres")
        for target in ("anon", "authenticated"):
            conn.execute(f"set role {target}")
            assert conn.execute("select current_user").fetchone() == (target,)
            conn.execute("reset role")
        # A request transaction as authenticated that resets its role lands on the login itself.
        with conn.transaction():
            conn.execute("select set_config('role', 'authenticated', true)")
            conn.execute("reset role")
            assert conn.execute("select current_user").fetchone() == ("agentmarket_api",)
        # ... whose own privileges are nil.
        for statement in (
            "select 1 from private.deployment_secrets",
            "select 1 from private.telemetry_events",
            "select 1 from private.api_signing_key",
            "select 1 from private.app_settings",
            "select 1 from auth.users",
            "select 1 from supabase_migrations.schema_migrations",
            "select 1 from public.agent_deployments",
            "select 1 from public.message_feedback",
            "update public.marketplace_agents set featured = true",
            "insert into private.telemetry_events (name) values ('x.y')",
            "select private.track_event('x.y', null, null, null)",
            "select * from private.claim_chat_jobs('x', 1, 30)",
            "create table public.api_made_this (id int)",
            "create role api_made_this",
        ):
            assert denied(conn, statement), statement
        # Its two functions: the applied versions (/readyz) and the signing key.
        versions = [v for (v,) in conn.execute("select private.applied_migrations()")]
        assert versions == [m.version for m in migrate.load_files(paths.migrations_dir())]
        key = conn.execute("select private.api_signing_key()").fetchone()
        assert key is not None and len(key[0]) == 32
        # As authenticated (a request), the key is out of reach.
        with conn.transaction():
            conn.execute("select set_config('role', 'authenticated', true)")
            assert denied(conn, "select private.api_signing_key()")


def test_the_worker_login_works_as_service_role_and_is_no_superuser(settings: Settings) -> None:
    with psycopg.connect(settings.worker_url, autocommit=True) as conn:
        assert conn.execute("select session_user, current_user").fetchone() == (
            "agentmarket_worker",
            "service_role",
        )
        # The worker's job: claim (nothing queued here), read prompts and secrets, telemetry.
        assert conn.execute("select * from private.claim_chat_jobs('it', 1, 30)").fetchall() == []
        conn.execute("select count(*) from private.agent_prompts").fetchone()
        conn.execute("select count(*) from private.deployment_secrets").fetchone()
        with conn.transaction():
            conn.execute("insert into private.telemetry_events (name) values ('it.worker.probe')")
            raise psycopg.Rollback()
        # RESET ROLE returns to service_role (the login's default), never to anything more.
        conn.execute("reset role")
        assert conn.execute("select current_user").fetchone() == ("service_role",)
        for statement in (
            "set role postgres",
            "set role agentmarket_api",
            "set session authorization postgres",
            "create role worker_made_this",
            "alter system set work_mem = '64MB'",
            "select 1 from private.api_signing_key",
        ):
            assert denied(conn, statement), statement


def test_neither_login_has_dangerous_attributes(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls,"
        " rolinherit, rolcanlogin from pg_roles"
        " where rolname in ('agentmarket_api', 'agentmarket_worker') order by rolname"
    ).fetchall()
    assert rows == [
        ("agentmarket_api", False, False, False, False, False, False, True),
        ("agentmarket_worker", False, False, False, False, False, False, True),
    ]


def test_local_logins_are_enabled_once_and_only_where_they_cannot_log_in(
    conn: psycopg.Connection, settings: Settings
) -> None:
    role = f"am_it_{uuid.uuid4().hex[:8]}"
    conn.execute(f"create role {role} nologin")
    try:
        assert migrate.is_plain_postgres(conn)
        assert migrate.enable_local_logins(conn, {role: "pw-one"}) == [role]
        params = conninfo_to_dict(settings.api_url)
        params.update(user=role, password="pw-one")
        with psycopg.connect(**params) as own:  # type: ignore[arg-type]
            assert own.execute("select session_user").fetchone() == (role,)
        # A login keeps its password; missing roles are skipped.
        assert migrate.enable_local_logins(conn, {role: "pw-two", "am_it_absent": "x"}) == []
        with psycopg.connect(**params) as own:  # type: ignore[arg-type]
            assert own.execute("select 1").fetchone() == (1,)
    finally:
        conn.execute(f"drop role {role}")


def test_migrate_stores_the_deployment_cap(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentmarket.cli import main

    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("DATABASE_DIRECT_URL", raising=False)
    monkeypatch.setenv("MAX_ACTIVE_DEPLOYMENTS", "7")
    assert main(["migrate", "up"]) == 0
    assert "stored MAX_ACTIVE_DEPLOYMENTS=7" in capsys.readouterr().out
    with psycopg.connect(db_url) as conn:
        row = conn.execute("select max_active_deployments from private.app_settings").fetchone()
        assert row == (7,)
    assert main(["migrate", "up"]) == 0
    assert "stored" not in capsys.readouterr().out  # unchanged: nothing written
