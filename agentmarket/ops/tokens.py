"""Local users and access tokens, as Supabase's local stack gives them (there is no GoTrue here).

`ensure_user` creates the `auth.users` row (admins carry `role: admin` in raw_app_meta_data, which
only the service can write); `mint_access_token` signs claims shaped like a GoTrue access token with
SUPABASE_JWT_SECRET (HS256).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import psycopg
from psycopg.types.json import Jsonb

from agentmarket.core.config import Settings
from agentmarket.db.pool import connect

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "LocalUser",
    "ensure_user",
    "issue_local_token",
    "mint_access_token",
]

DEFAULT_TTL_SECONDS = 3600


@dataclass(frozen=True)
class LocalUser:
    id: uuid.UUID
    email: str
    app_metadata: dict[str, Any]
    user_metadata: dict[str, Any]


def ensure_user(conn: psycopg.Connection, *, email: str, admin: bool = False) -> LocalUser:
    """The user with this email, created if missing; `admin` sets (never clears) the admin role."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 255:
        raise ValueError(f"not an email address: {email!r}")
    app_metadata: dict[str, Any] = {"provider": "email", "providers": ["email"]}
    if admin:
        app_metadata["role"] = "admin"
    with conn.transaction():
        row = conn.execute(
            """
            insert into auth.users (id, aud, role, email, email_confirmed_at,
                                    raw_app_meta_data, raw_user_meta_data)
            values (gen_random_uuid(), 'authenticated', 'authenticated', %(email)s, now(),
                    %(app)s, '{}'::jsonb)
            on conflict (email) where (is_anonymous = false) do update
              set raw_app_meta_data = auth.users.raw_app_meta_data || %(admin_patch)s,
                  updated_at = case when %(admin)s then now() else auth.users.updated_at end
            returning id, email, raw_app_meta_data, raw_user_meta_data
            """,
            {
                "email": email,
                "app": Jsonb(app_metadata),
                "admin": admin,
                "admin_patch": Jsonb({"role": "admin"} if admin else {}),
            },
        ).fetchone()
    assert row is not None
    return LocalUser(id=row[0], email=row[1], app_metadata=row[2] or {}, user_metadata=row[3] or {})


def mint_access_token(
    user: LocalUser,
    *,
    secret: str,
    issuer: str | None = None,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: int | None = None,
) -> str:
    """An HS256 access token with GoTrue's claim shape."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "aud": "authenticated",
        "exp": issued + ttl_seconds,
        "iat": issued,
        "sub": str(user.id),
        "email": user.email,
        "phone": "",
        "app_metadata": user.app_metadata,
        "user_metadata": user.user_metadata,
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": issued}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")


def issue_local_token(
    settings: Settings, *, email: str, admin: bool = False, ttl_seconds: int = DEFAULT_TTL_SECONDS
) -> tuple[LocalUser, str]:
    """`agentmarket token` and the dev sign-in (`POST /api/dev/session`): the user (created if
    missing, over the operator's DATABASE_URL) and an access token signed with
    SUPABASE_JWT_SECRET for SUPABASE_URL's issuer. Blocking; raises ValueError for a bad email,
    RuntimeError without a JWT secret and psycopg.OperationalError when the database is away."""
    if settings.supabase_jwt_secret is None:
        raise RuntimeError("SUPABASE_JWT_SECRET is not set: cannot sign local tokens")
    with connect(settings) as conn:
        user = ensure_user(conn, email=email, admin=admin)
    token = mint_access_token(
        user,
        secret=settings.supabase_jwt_secret.get_secret_value(),
        issuer=settings.jwt_issuer,
        ttl_seconds=ttl_seconds,
    )
    return user, token
