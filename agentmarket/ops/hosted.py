"""`agentmarket verify --hosted`: a hosted Supabase project checked the way its clients use it,
after a migration: the `supabase` client (PostgREST and Auth) with the project's anon key, never
the service key or a database login.

- catalog: `GET /rest/v1/marketplace_agents?select=…` as anon lists published agents, and only
  those.
- search: `POST /rest/v1/rpc/search_agents` as anon finds the first listed agent by its name.
- private-schema: `GET /rest/v1/chat_jobs` with `Accept-Profile: private` is refused as a schema
  PostgREST does not expose (PGRST106, or a 404); any other answer means it is exposed.
- anon-rows: `GET /rest/v1/agent_deployments` as anon gives no rows (refused or empty).
- own-rows: a signed-in user reads deployments, conversations and survey answers: every row is
  their own.

`own-rows` needs a user: VERIFY_USER_EMAIL + VERIFY_USER_PASSWORD (signs in with the password
grant) or VERIFY_ACCESS_TOKEN (a token of theirs); without either it is skipped, not failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from postgrest.exceptions import APIError

__all__ = ["CHECKS", "Check", "HostedProject", "verify_hosted"]

CHECKS = ("catalog", "search", "private-schema", "anon-rows", "own-rows")
# A signed-in user's tables, each with its owner column: they must see only their own rows.
OWN_TABLES = ("agent_deployments", "agent_conversations", "survey_responses")
# PostgREST's answer for a schema that is not in its exposed list.
SCHEMA_NOT_EXPOSED = "PGRST106"
# What a refused read looks like: Postgres's permission denied, or the HTTP status PostgREST gave.
PERMISSION_DENIED = ("42501", "401", "403")
TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: skipped
    detail: str


@dataclass(frozen=True)
class HostedProject:
    url: str
    anon_key: str
    user_email: str | None = None
    user_password: str | None = None
    access_token: str | None = None


def _client(project: HostedProject, http: Any, access_token: str | None = None) -> Any:
    """A `supabase` client with the anon key (and the user's token, if given) over `http`."""
    from supabase import ClientOptions, create_client

    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    options = ClientOptions(
        auto_refresh_token=False,
        persist_session=False,
        postgrest_client_retry=False,
        headers=headers,
        httpx_client=http,
    )
    return create_client(project.url, project.anon_key, options)


def _error(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{code}: {message}" if code else message


def _catalog(client: Any) -> tuple[Check, dict[str, Any] | None]:
    rows = (
        client.table("marketplace_agents")
        .select("id,slug,name,is_published")
        .order("name")
        .limit(20)
        .execute()
        .data
    )
    if not rows:
        return Check("catalog", False, "no published agents listed"), None
    hidden = [row.get("slug") for row in rows if row.get("is_published") is not True]
    if hidden:
        return Check("catalog", False, f"unpublished agents visible to anon: {hidden}"), None
    return Check("catalog", True, f"{len(rows)} published agents listed"), rows[0]


def _search(client: Any, agent: dict[str, Any] | None) -> Check:
    if agent is None:
        return Check("search", False, "no agent listed to search for")
    params = {"q": str(agent.get("name") or agent.get("slug")), "max_results": 20}
    rows = client.rpc("search_agents", params).execute().data
    if not isinstance(rows, list) or not rows:
        return Check("search", False, f"search_agents found nothing for {params['q']!r}")
    if agent.get("id") not in {row.get("id") for row in rows}:
        return Check("search", False, f"search_agents for {params['q']!r} misses {agent['slug']}")
    return Check("search", True, f"search_agents({params['q']!r}): found among {len(rows)} results")


def _private_schema(client: Any) -> Check:
    try:
        client.schema("private").table("chat_jobs").select("id").limit(1).execute()
    except APIError as exc:  # a failed request (network, timeout) fails the check as an error
        if exc.code in (SCHEMA_NOT_EXPOSED, "404"):
            return Check("private-schema", True, f"not exposed ({exc.code})")
        return Check("private-schema", False, f"exposed: PostgREST answered {_error(exc)}")
    return Check("private-schema", False, "exposed: private.chat_jobs answered as anon")


def _anon_rows(client: Any) -> Check:
    try:
        rows = client.table("agent_deployments").select("id").limit(1).execute().data
    except APIError as exc:
        if exc.code in PERMISSION_DENIED:
            return Check("anon-rows", True, f"refused ({_error(exc)})")
        raise
    if rows:
        return Check("anon-rows", False, "anon reads deployments")
    return Check("anon-rows", True, "anon sees no deployments")


def _signed_in(project: HostedProject, http: Any) -> tuple[Any, str] | None:
    """A client as the test user and their id; None when no user is configured."""
    if project.access_token:
        claims = jwt.decode(project.access_token, options={"verify_signature": False})
        return _client(project, http, project.access_token), str(claims["sub"])
    if project.user_email and project.user_password:
        client = _client(project, http)
        response = client.auth.sign_in_with_password(
            {"email": project.user_email, "password": project.user_password}
        )
        if response.session is None or response.user is None:
            raise RuntimeError("sign-in returned no session")
        return _client(project, http, response.session.access_token), str(response.user.id)
    return None


def _own_rows(project: HostedProject, http: Any) -> Check:
    signed_in = _signed_in(project, http)
    if signed_in is None:
        return Check(
            "own-rows",
            None,
            "skipped: set VERIFY_USER_EMAIL + VERIFY_USER_PASSWORD or VERIFY_ACCESS_TOKEN",
        )
    client, user_id = signed_in
    seen = []
    for table in OWN_TABLES:
        rows = client.table(table).select("id,user_id").limit(1000).execute().data
        others = [row["id"] for row in rows if row.get("user_id") != user_id]
        if others:
            return Check("own-rows", False, f"{table}: {len(others)} rows of other users visible")
        seen.append(f"{table} {len(rows)}")
    return Check("own-rows", True, "only the user's own rows: " + ", ".join(seen))


def verify_hosted(project: HostedProject) -> list[Check]:
    """Every check, in order; a check that raises fails with the error, the others still run."""
    import httpx

    with httpx.Client(timeout=TIMEOUT_SECONDS) as http:
        client = _client(project, http)
        found: dict[str, Any] = {}

        def catalog() -> Check:
            check, found["agent"] = _catalog(client)
            return check

        steps: list[tuple[str, Callable[[], Check]]] = [
            ("catalog", catalog),
            ("search", lambda: _search(client, found.get("agent"))),
            ("private-schema", lambda: _private_schema(client)),
            ("anon-rows", lambda: _anon_rows(client)),
            ("own-rows", lambda: _own_rows(project, http)),
        ]
        checks = []
        for name, step in steps:
            try:
                checks.append(step())
            except Exception as exc:  # a failed request fails its check, never the command
                checks.append(Check(name, False, _error(exc)))
    return checks
