"""Who is an admin: `app_metadata.role = 'admin'` on the user (only the service can write it;
tokens carry it as `app_metadata`), set and cleared by `agentmarket admin grant|revoke`.

Two ways to reach the users, chosen by the settings (`admin_target`):

* **local** — the database at DATABASE_URL (the operator's login), by SQL on
  `auth.users.raw_app_meta_data`: a local stack or a plain PostgreSQL with the auth shim, where
  `agentmarket token` mints the tokens.
* **hosted** — a Supabase project's Auth admin API (SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY) via
  the `supabase` client: the user is found by email through `list_users` pages (until the
  first empty one: the server may cap the page size below what was asked), then
  `update_user_by_id` sends their whole app_metadata back with `role` changed (GoTrue merges
  app_metadata key by key and drops keys sent as null, so revoke sends `"role": null`).

Either way the user's other app_metadata keys stay as they were, and a token issued before the
change keeps its old claims until it expires (an hour by default): the user signs in again (or
refreshes) to act as an admin, or stops being one at that token's expiry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from agentmarket.core.config import Settings

__all__ = [
    "ADMIN_ROLE",
    "LIST_USERS_PAGE",
    "AdminChange",
    "AdminTarget",
    "UnknownUser",
    "admin_target",
    "set_admin_hosted",
    "set_admin_local",
]

ADMIN_ROLE = "admin"
LIST_USERS_PAGE = 200
TIMEOUT_SECONDS = 15.0


class AdminTarget(StrEnum):
    LOCAL = "local"
    HOSTED = "hosted"


class UnknownUser(LookupError):
    """No user has this email."""


@dataclass(frozen=True)
class AdminChange:
    user_id: uuid.UUID
    email: str
    was_admin: bool
    is_admin: bool

    @property
    def changed(self) -> bool:
        return self.was_admin != self.is_admin


def admin_target(settings: Settings, override: AdminTarget | None = None) -> AdminTarget:
    """Where `admin grant|revoke` goes: the override if given, else the hosted project when
    SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are both set, else the local database."""
    if override is not None:
        return override
    if settings.supabase_url and settings.supabase_service_role_key is not None:
        return AdminTarget.HOSTED
    return AdminTarget.LOCAL


def _normalise(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or len(email) > 255:
        raise ValueError(f"not an email address: {email!r}")
    return email


def _with_role(app_metadata: dict[str, Any], admin: bool) -> dict[str, Any]:
    """The app_metadata with the admin role set, or cleared (only an admin role is cleared; a
    role of another kind is left alone)."""
    updated = dict(app_metadata)
    if admin:
        updated["role"] = ADMIN_ROLE
    elif updated.get("role") == ADMIN_ROLE:
        updated.pop("role")
    return updated


def set_admin_local(conn: psycopg.Connection, *, email: str, admin: bool) -> AdminChange:
    """Grant (`admin`) or revoke the admin role of the user with this email in the local
    database's auth.users (`UnknownUser` when there is none)."""
    email = _normalise(email)
    with conn.transaction():
        row = conn.execute(
            "select id, email, coalesce(raw_app_meta_data, '{}'::jsonb) from auth.users"
            " where lower(email) = %(email)s and not coalesce(is_anonymous, false)"
            " for update",
            {"email": email},
        ).fetchone()
        if row is None:
            raise UnknownUser(email)
        user_id, stored_email, app_metadata = row
        updated = _with_role(app_metadata, admin)
        if updated != app_metadata:
            conn.execute(
                "update auth.users set raw_app_meta_data = %(app)s, updated_at = now()"
                " where id = %(id)s",
                {"app": Jsonb(updated), "id": user_id},
            )
    return AdminChange(
        user_id=user_id,
        email=stored_email,
        was_admin=app_metadata.get("role") == ADMIN_ROLE,
        is_admin=updated.get("role") == ADMIN_ROLE,
    )


def set_admin_hosted(
    *, url: str, service_role_key: str, email: str, admin: bool, page_size: int = LIST_USERS_PAGE
) -> AdminChange:
    """Grant or revoke the admin role through a Supabase project's Auth admin API
    (`UnknownUser` when no user has this email; the client's `AuthError` on any refusal)."""
    import httpx
    from supabase import ClientOptions, create_client

    email = _normalise(email)
    with httpx.Client(timeout=TIMEOUT_SECONDS) as http:
        options = ClientOptions(auto_refresh_token=False, persist_session=False, httpx_client=http)
        admin_api = create_client(url, service_role_key, options).auth.admin
        page = 1
        while True:
            users = admin_api.list_users(page=page, per_page=page_size)
            user = next((u for u in users if (u.email or "").lower() == email), None)
            if user is not None or not users:  # an empty page is past the last one
                break
            page += 1
        if user is None:
            raise UnknownUser(email)
        current = dict(user.app_metadata or {})
        updated = _with_role(current, admin)
        if updated != current:
            body = dict(updated)
            if "role" in current and "role" not in updated:
                body["role"] = None  # GoTrue deletes an app_metadata key sent as null
            admin_api.update_user_by_id(user.id, {"app_metadata": body})
    return AdminChange(
        user_id=uuid.UUID(user.id),
        email=user.email or email,
        was_admin=current.get("role") == ADMIN_ROLE,
        is_admin=updated.get("role") == ADMIN_ROLE,
    )
