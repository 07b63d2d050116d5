from __future__ import annotations

import json
import uuid
from typing import Any

import jwt
import psycopg
import pytest

from agentmarket.cli import main
from agentmarket.core.config import DEV_JWT_SECRET
from agentmarket.ops.tokens import ensure_user, mint_access_token

pytestmark = pytest.mark.db


def decode(token: str, issuer: str | None = None) -> dict[str, Any]:
    return jwt.decode(
        token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated", issuer=issuer
    )


def test_token_command_creates_the_user_and_prints_a_supabase_shaped_token(
    db_url: str,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("SUPABASE_URL", raising=False)
    assert main(["token", "--email", "Alice@Example.com"]) == 0
    token = capsys.readouterr().out.strip()
    claims = decode(token)

    row = conn.execute(
        "select id, email, raw_app_meta_data from auth.users where email = 'alice@example.com'"
    ).fetchone()
    assert row is not None
    assert claims["sub"] == str(row[0])
    assert claims["email"] == "alice@example.com"
    assert claims["role"] == "authenticated"
    assert claims["aud"] == "authenticated"
    assert claims["is_anonymous"] is False
    assert claims["user_metadata"] == {}
    assert "role" not in claims["app_metadata"]
    assert claims["exp"] == claims["iat"] + 3600
    assert "iss" not in claims

    # Same email again: same user.
    assert main(["token", "--email", "alice@example.com"]) == 0
    assert decode(capsys.readouterr().out.strip())["sub"] == str(row[0])
    assert conn.execute("select count(*) from auth.users").fetchone() == (1,)


def test_admin_role_lives_in_app_metadata_and_issuer_follows_supabase_url(
    db_url: str,
    conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SUPABASE_URL", "http://127.0.0.1:54321/")
    assert main(["token", "--email", "root@example.com", "--admin", "--ttl", "60"]) == 0
    claims = decode(capsys.readouterr().out.strip(), issuer="http://127.0.0.1:54321/auth/v1")
    assert claims["app_metadata"]["role"] == "admin"
    assert claims["exp"] == claims["iat"] + 60
    stored = conn.execute(
        "select raw_app_meta_data ->> 'role' from auth.users where email = 'root@example.com'"
    ).fetchone()
    assert stored == ("admin",)


def test_claims_drive_rls_exactly_as_postgrest_would(conn: psycopg.Connection) -> None:
    """A minted token's claims, set as PostgREST sets them, identify the user to auth.uid()."""
    admin = ensure_user(conn, email="admin@example.com", admin=True)
    plain = ensure_user(conn, email="plain@example.com")
    unpublished = conn.execute(
        "select count(*) from public.marketplace_agents where not is_published"
    ).fetchone()
    assert unpublished is not None and unpublished[0] >= 1

    def visible_agents(user_token: str) -> tuple[str, int]:
        claims = decode(user_token)
        with conn.transaction():
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            uid = conn.execute("select auth.uid()::text").fetchone()
            count = conn.execute("select count(*) from public.marketplace_agents").fetchone()
        assert uid is not None and count is not None
        return uid[0], count[0]

    total = conn.execute("select count(*) from public.marketplace_agents").fetchone()
    assert total is not None
    admin_uid, admin_sees = visible_agents(mint_access_token(admin, secret=DEV_JWT_SECRET))
    plain_uid, plain_sees = visible_agents(mint_access_token(plain, secret=DEV_JWT_SECRET))
    assert (admin_uid, admin_sees) == (str(admin.id), total[0])
    assert (plain_uid, plain_sees) == (str(plain.id), total[0] - unpublished[0])
    assert uuid.UUID(plain_uid) != admin.id


def test_bad_email_is_refused(
    db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["token", "--email", "not-an-email"]) == 2
    assert "not an email address" in capsys.readouterr().err
