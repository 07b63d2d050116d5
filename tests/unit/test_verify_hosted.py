"""`agentmarket verify --hosted` against a fake hosted project (respx; no PostgREST runs here): the
requests it sends (paths, apikey, Authorization, Accept-Profile, the rpc body) and, for each
failure mode, a non-zero exit naming the failed check."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import respx

from agentmarket.cli import main

PROJECT = "https://abcdefgh.supabase.co"
ANON_KEY = "anon-test-0123456789abcdef"
USER_ID = str(uuid.uuid4())
OTHER_ID = str(uuid.uuid4())
USER_TOKEN = jwt.encode(
    {"sub": USER_ID, "role": "authenticated", "exp": int(time.time()) + 3600},
    "a-secret-of-the-fake-project-32-chars",
    algorithm="HS256",
)
AGENT = {"id": str(uuid.uuid4()), "slug": "sql-sidekick", "name": "SQL Sidekick"}


@dataclass
class FakeProject:
    """What a hosted project answers; each test breaks one thing."""

    catalog: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {**AGENT, "is_published": True},
            {
                "id": str(uuid.uuid4()),
                "slug": "copy-coach",
                "name": "Copy Coach",
                "is_published": True,
            },
        ]
    )
    catalog_status: int = 200
    search: list[dict[str, Any]] = field(default_factory=lambda: [{**AGENT}])
    private: httpx.Response = field(
        default_factory=lambda: httpx.Response(
            406,
            json={
                "code": "PGRST106",
                "details": None,
                "hint": None,
                "message": "Invalid schema: private",
            },
        )
    )
    anon_deployments: httpx.Response = field(
        default_factory=lambda: httpx.Response(
            401,
            json={
                "code": "42501",
                "details": None,
                "hint": None,
                "message": "permission denied for table agent_deployments",
            },
        )
    )
    own: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "agent_deployments": [{"id": "d1", "user_id": USER_ID}],
            "agent_conversations": [],
            "survey_responses": [{"id": "s1", "user_id": USER_ID}],
        }
    )
    sign_in: httpx.Response = field(default_factory=lambda: httpx.Response(200, json=session()))
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        signed_in = request.headers.get("authorization") == f"Bearer {USER_TOKEN}"
        if path == "/auth/v1/token":
            return self.sign_in
        if request.headers.get("accept-profile", "public") != "public":
            return self.private
        if path == "/rest/v1/marketplace_agents":
            return httpx.Response(self.catalog_status, json=self.catalog)
        if path == "/rest/v1/rpc/search_agents":
            return httpx.Response(200, json=self.search)
        table = path.removeprefix("/rest/v1/")
        if table in self.own:
            return httpx.Response(200, json=self.own[table]) if signed_in else self.anon_deployments
        return httpx.Response(404, json={"code": "PGRST205", "message": f"no {table}"})


def session() -> dict[str, Any]:
    return {
        "access_token": USER_TOKEN,
        "refresh_token": "r1",
        "expires_in": 3600,
        "expires_at": int(time.time()) + 3600,
        "token_type": "bearer",
        "user": {
            "id": USER_ID,
            "aud": "authenticated",
            "email": "verify@example.com",
            "app_metadata": {},
            "user_metadata": {},
            "created_at": "2026-11-01T00:00:00Z",
        },
    }


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SUPABASE_URL", PROJECT)
    monkeypatch.setenv("SUPABASE_ANON_KEY", ANON_KEY)
    for name in ("VERIFY_USER_EMAIL", "VERIFY_USER_PASSWORD", "VERIFY_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def project() -> Iterator[FakeProject]:
    fake = FakeProject()
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host="abcdefgh.supabase.co").mock(side_effect=fake.handle)
        yield fake


def run(capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["verify", "--hosted"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def line(out: str, check: str) -> str:
    return next(row for row in out.splitlines() if f"  {check} " in row)


def test_a_healthy_project_passes_and_the_requests_have_the_client_shapes(
    project: FakeProject, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERIFY_USER_EMAIL", "verify@example.com")
    monkeypatch.setenv("VERIFY_USER_PASSWORD", "a-test-password")
    status, out, err = run(capsys)
    assert status == 0, out + err
    for check in ("catalog", "search", "private-schema", "anon-rows", "own-rows"):
        assert line(out, check).lstrip().startswith("ok")
    assert "all checks passed" in out

    by_path: dict[tuple[str, str], list[httpx.Request]] = {}
    for request in project.requests:
        by_path.setdefault((request.method, request.url.path), []).append(request)
        assert request.headers["apikey"] == ANON_KEY  # every request carries the anon key

    (catalog,) = by_path[("GET", "/rest/v1/marketplace_agents")]
    assert catalog.url.params["select"] == "id,slug,name,is_published"
    assert catalog.headers["authorization"] == f"Bearer {ANON_KEY}"

    (search,) = by_path[("POST", "/rest/v1/rpc/search_agents")]
    assert json.loads(search.content) == {"q": "SQL Sidekick", "max_results": 20}
    assert search.headers["authorization"] == f"Bearer {ANON_KEY}"

    (private,) = by_path[("GET", "/rest/v1/chat_jobs")]
    assert private.headers["accept-profile"] == "private"

    (sign_in,) = by_path[("POST", "/auth/v1/token")]
    assert sign_in.url.params["grant_type"] == "password"
    assert json.loads(sign_in.content)["email"] == "verify@example.com"

    anon, signed_in = by_path[("GET", "/rest/v1/agent_deployments")]
    assert anon.headers["authorization"] == f"Bearer {ANON_KEY}"
    assert signed_in.headers["authorization"] == f"Bearer {USER_TOKEN}"
    assert signed_in.url.params["select"] == "id,user_id"
    for table in ("agent_conversations", "survey_responses"):
        (read,) = by_path[("GET", f"/rest/v1/{table}")]
        assert read.headers["authorization"] == f"Bearer {USER_TOKEN}"


def test_an_access_token_setting_signs_in_without_a_password(
    project: FakeProject, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERIFY_ACCESS_TOKEN", USER_TOKEN)
    status, out, _ = run(capsys)
    assert status == 0
    assert line(out, "own-rows").lstrip().startswith("ok")
    assert not [r for r in project.requests if r.url.path.startswith("/auth/")]


def test_without_a_user_the_signed_in_check_is_skipped_not_failed(
    project: FakeProject, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys)
    assert status == 0
    assert line(out, "own-rows").lstrip().startswith("skip")


def published_and_hidden() -> list[dict[str, Any]]:
    return [
        {**AGENT, "is_published": True},
        {"id": "x", "slug": "draft", "name": "Draft", "is_published": False},
    ]


def others_row(fake: FakeProject) -> None:
    fake.own["agent_deployments"] = [
        {"id": "d1", "user_id": USER_ID},
        {"id": "d2", "user_id": OTHER_ID},
    ]


@pytest.mark.parametrize(
    ("breakage", "failed"),
    [
        (lambda f: setattr(f, "catalog", []), ["catalog", "search"]),
        (lambda f: setattr(f, "catalog", published_and_hidden()), ["catalog", "search"]),
        (lambda f: setattr(f, "catalog_status", 500), ["catalog", "search"]),
        (lambda f: setattr(f, "search", []), ["search"]),
        (lambda f: setattr(f, "search", [{"id": "someone-else"}]), ["search"]),
        (lambda f: setattr(f, "private", httpx.Response(200, json=[])), ["private-schema"]),
        (
            lambda f: setattr(
                f,
                "private",
                httpx.Response(401, json={"code": "42501", "message": "permission denied"}),
            ),
            ["private-schema"],
        ),
        (
            lambda f: setattr(f, "anon_deployments", httpx.Response(200, json=[{"id": "d9"}])),
            ["anon-rows"],
        ),
        (others_row, ["own-rows"]),
    ],
    ids=[
        "empty-catalog",
        "unpublished-visible",
        "catalog-500",
        "search-empty",
        "search-misses",
        "private-readable",
        "private-exposed",
        "anon-reads-deployments",
        "others-rows-visible",
    ],
)
def test_each_failure_exits_non_zero_naming_the_check(
    project: FakeProject,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    breakage: Any,
    failed: list[str],
) -> None:
    monkeypatch.setenv("VERIFY_ACCESS_TOKEN", USER_TOKEN)
    breakage(project)
    status, out, err = run(capsys)
    assert status == 1
    assert f"{len(failed)} check(s) failed: {', '.join(failed)}" in err
    for check in ("catalog", "search", "private-schema", "anon-rows", "own-rows"):
        mark = line(out, check).split()[0]
        assert mark == ("FAIL" if check in failed else "ok"), out


def test_a_failed_sign_in_fails_the_signed_in_check(
    project: FakeProject, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERIFY_USER_EMAIL", "verify@example.com")
    monkeypatch.setenv("VERIFY_USER_PASSWORD", "wrong-password")
    project.sign_in = httpx.Response(
        400, json={"error_code": "invalid_credentials", "msg": "Invalid login credentials"}
    )
    status, out, err = run(capsys)
    assert status == 1
    assert "FAIL" in line(out, "own-rows") and "Invalid login credentials" in line(out, "own-rows")
    assert "wrong-password" not in out + err


def test_settings_are_required(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPABASE_ANON_KEY")
    assert main(["verify", "--hosted"]) == 2
    assert "needs SUPABASE_URL and SUPABASE_ANON_KEY" in capsys.readouterr().err
    assert main(["verify"]) == 2
    assert "pass --hosted" in capsys.readouterr().err


def test_the_test_users_credentials_are_secrets() -> None:
    from pydantic import SecretStr, ValidationError

    from agentmarket.core import sentry
    from agentmarket.core.config import AppEnv, Settings

    settings = Settings(
        verify_user_email="verify@example.com",
        verify_user_password=SecretStr("a-long-test-password"),
        verify_access_token=SecretStr(USER_TOKEN),
    )
    assert "a-long-test-password" not in repr(settings)
    assert USER_TOKEN not in repr(settings)
    found = sentry._settings_secrets(settings)
    assert "a-long-test-password" in found and USER_TOKEN in found  # scrubbed from Sentry events
    with pytest.raises(ValidationError, match="VERIFY_USER_PASSWORD is a placeholder"):
        Settings(app_env=AppEnv.TEST, verify_user_password=SecretStr("change-me"))
    assert (
        Settings(verify_user_email=" ", verify_access_token=SecretStr("")).verify_user_email is None
    )


def test_an_unreachable_project_fails_every_check_with_the_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERIFY_ACCESS_TOKEN", USER_TOKEN)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.route(host="abcdefgh.supabase.co").mock(side_effect=httpx.ConnectError("refused"))
        status, out, err = run(capsys)
    assert status == 1
    for check in ("catalog", "search", "private-schema", "anon-rows", "own-rows"):
        assert line(out, check).split()[0] == "FAIL"
    assert "exposed" not in line(out, "private-schema")
    assert "refused" in line(out, "private-schema")
    assert "5 check(s) failed" in err
