"""`agentmarket admin grant|revoke --email E`: locally by SQL on auth.users (what the token command
then mints changes with it) and on a hosted project through the Auth admin API (the HTTP it sends,
checked with respx); the settings choose, --local / --hosted override."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import jwt
import psycopg
import pytest
import respx

from agentmarket.cli import main
from agentmarket.core.config import DEV_JWT_SECRET, get_settings
from agentmarket.ops.admin import AdminTarget, admin_target

pytestmark = pytest.mark.db

PROJECT = "https://abcdefgh.supabase.co"
SERVICE_KEY = "svc-test-0123456789abcdef"
EMAIL = "ops@example.com"


@pytest.fixture
def local(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", db_url)
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_DIRECT_URL"):
        monkeypatch.delenv(name, raising=False)
    return db_url


@pytest.fixture
def hosted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", PROJECT)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)


def minted(capsys: pytest.CaptureFixture[str], email: str = EMAIL) -> dict[str, Any]:
    assert main(["token", "--email", email]) == 0
    token = capsys.readouterr().out.strip()
    claims: dict[str, Any] = jwt.decode(
        token, DEV_JWT_SECRET, algorithms=["HS256"], audience="authenticated"
    )
    return claims


def test_the_settings_choose_the_target_and_the_flags_override() -> None:
    plain = get_settings(supabase_url=None, supabase_service_role_key=None)
    url_only = get_settings(supabase_url=PROJECT, supabase_service_role_key=None)
    both = get_settings(supabase_url=PROJECT, supabase_service_role_key=SERVICE_KEY)
    assert admin_target(plain) is AdminTarget.LOCAL
    assert admin_target(url_only) is AdminTarget.LOCAL  # the local stack's issuer alone
    assert admin_target(both) is AdminTarget.HOSTED
    assert admin_target(both, AdminTarget.LOCAL) is AdminTarget.LOCAL
    assert admin_target(plain, AdminTarget.HOSTED) is AdminTarget.HOSTED


def test_local_grant_and_revoke_change_what_the_token_command_mints(
    local: str, conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    before = minted(capsys)
    assert "role" not in before["app_metadata"]

    assert main(["admin", "grant", "--email", "  OPS@example.com "]) == 0
    out = capsys.readouterr().out
    assert f"{EMAIL} ({before['sub']}) is now an admin (local)" in out
    granted = minted(capsys)
    assert granted["sub"] == before["sub"]
    assert granted["app_metadata"] == {**before["app_metadata"], "role": "admin"}

    assert main(["admin", "grant", "--email", EMAIL]) == 0
    assert "already an admin" in capsys.readouterr().out

    assert main(["admin", "revoke", "--email", EMAIL]) == 0
    assert "is now not an admin (local)" in capsys.readouterr().out
    revoked = minted(capsys)
    assert revoked["app_metadata"] == before["app_metadata"]  # the other keys untouched
    stored = conn.execute(
        "select raw_app_meta_data from auth.users where email = %s", (EMAIL,)
    ).fetchone()
    assert stored == (before["app_metadata"],)


def test_local_revoke_leaves_a_role_of_another_kind(
    local: str, conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    minted(capsys)
    conn.execute(
        'update auth.users set raw_app_meta_data = raw_app_meta_data || \'{"role": "support"}\''
        " where email = %s",
        (EMAIL,),
    )
    assert main(["admin", "revoke", "--email", EMAIL]) == 0
    assert "already not an admin" in capsys.readouterr().out
    assert minted(capsys)["app_metadata"]["role"] == "support"


def test_local_unknown_email_is_a_clear_failure(
    local: str, conn: psycopg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["admin", "grant", "--email", "nobody@example.com"]) == 1
    err = capsys.readouterr().err
    assert "no user with email 'nobody@example.com' (local)" in err
    assert conn.execute(
        "select count(*) from auth.users where email = 'nobody@example.com'"
    ).fetchone() == (0,)
    assert main(["admin", "grant", "--email", "not-an-email"]) == 2
    assert "not an email address" in capsys.readouterr().err


def user_json(email: str, app_metadata: dict[str, Any], uid: str | None = None) -> dict[str, Any]:
    return {
        "id": uid or str(uuid.uuid4()),
        "aud": "authenticated",
        "role": "authenticated",
        "email": email,
        "app_metadata": app_metadata,
        "user_metadata": {},
        "created_at": "2026-11-01T00:00:00Z",
    }


def others(n: int) -> list[dict[str, Any]]:
    return [user_json(f"user{i}@example.com", {"provider": "email"}) for i in range(n)]


def assert_service_headers(request: httpx.Request) -> None:
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"


@pytest.mark.parametrize(
    ("action", "stored", "sent"),
    [
        (
            "grant",
            {"provider": "email", "providers": ["email"], "tier": "pro"},
            {"provider": "email", "providers": ["email"], "tier": "pro", "role": "admin"},
        ),
        (
            "revoke",
            {"provider": "email", "providers": ["email"], "role": "admin"},
            {"provider": "email", "providers": ["email"], "role": None},
        ),
    ],
)
def test_hosted_grant_and_revoke_send_the_auth_admin_requests(
    hosted: None,
    capsys: pytest.CaptureFixture[str],
    action: str,
    stored: dict[str, Any],
    sent: dict[str, Any],
) -> None:
    uid = str(uuid.uuid4())
    target = user_json("Ops@Example.com", stored, uid)
    with respx.mock(base_url=f"{PROJECT}/auth/v1", assert_all_called=True) as api:
        listed = api.get("/admin/users").mock(
            side_effect=[
                httpx.Response(200, json={"users": others(200)}),  # not on the first page
                httpx.Response(200, json={"users": [*others(3), target]}),
            ]
        )
        updated = api.put(f"/admin/users/{uid}").mock(
            return_value=httpx.Response(200, json=user_json(EMAIL, {}, uid))
        )
        assert main(["admin", action, "--email", EMAIL]) == 0

    assert [dict(call.request.url.params) for call in listed.calls] == [
        {"page": "1", "per_page": "200"},
        {"page": "2", "per_page": "200"},
    ]
    for call in [*listed.calls, *updated.calls]:
        assert_service_headers(call.request)
    (put,) = updated.calls
    assert put.request.method == "PUT"
    assert put.request.url.path == f"/auth/v1/admin/users/{uid}"
    assert json.loads(put.request.content) == {"app_metadata": sent}
    state = "an admin" if action == "grant" else "not an admin"
    assert f"is now {state} (hosted)" in capsys.readouterr().out


def test_hosted_sends_nothing_when_there_is_nothing_to_change(
    hosted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    target = user_json(EMAIL, {"provider": "email", "role": "admin"})
    with respx.mock(base_url=f"{PROJECT}/auth/v1", assert_all_called=False) as api:
        api.get("/admin/users").mock(return_value=httpx.Response(200, json={"users": [target]}))
        updated = api.put(url__regex=r"/admin/users/.*")
        assert main(["admin", "grant", "--email", EMAIL]) == 0
    assert not updated.called
    assert "already an admin (hosted)" in capsys.readouterr().out


def test_hosted_unknown_email_is_a_clear_failure_and_changes_nothing(
    hosted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with respx.mock(base_url=f"{PROJECT}/auth/v1", assert_all_called=False) as api:
        listed = api.get("/admin/users").mock(
            side_effect=[
                httpx.Response(200, json={"users": others(50)}),  # a server's own page cap
                httpx.Response(200, json={"users": others(7)}),
                httpx.Response(200, json={"users": []}),
            ]
        )
        updated = api.put(url__regex=r"/admin/users/.*")
        assert main(["admin", "grant", "--email", EMAIL]) == 1
    assert [call.request.url.params["page"] for call in listed.calls] == ["1", "2", "3"]
    assert not updated.called
    assert f"no user with email '{EMAIL}' (hosted)" in capsys.readouterr().err


def test_hosted_refusal_is_a_failure_that_names_no_key(
    hosted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with respx.mock(base_url=f"{PROJECT}/auth/v1") as api:
        api.get("/admin/users").mock(
            return_value=httpx.Response(
                401, json={"code": 401, "error_code": "bad_jwt", "msg": "invalid JWT"}
            )
        )
        assert main(["admin", "revoke", "--email", EMAIL]) == 1
    err = capsys.readouterr().err
    assert "the Auth admin API refused" in err
    assert SERVICE_KEY not in err


def test_local_flag_overrides_hosted_settings(
    local: str, hosted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    minted(capsys)
    with respx.mock(assert_all_called=False) as api:  # any HTTP call would fail the test
        assert main(["admin", "grant", "--email", EMAIL, "--local"]) == 0
        assert not api.calls
    assert "now an admin (local)" in capsys.readouterr().out


def test_hosted_flag_needs_the_project_settings(
    local: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["admin", "grant", "--email", EMAIL, "--hosted"]) == 2
    assert "needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY" in capsys.readouterr().err
