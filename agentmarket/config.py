"""Settings: one pydantic-settings class read from the environment (and `.env`), built by a
function.

Nothing here connects to anything; callers build `Settings` and pass it on. Tests build their own.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values in .env.example that are fine on a laptop and wrong anywhere else.
DEV_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
# The JWT secret of Supabase's local stack (public, documented, useless outside a laptop).
DEV_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # noqa: S105
DEV_ENCRYPTION_KEY = "dev:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PLACEHOLDER_PREFIXES = ("change-me", "changeme", "your-", "<", "sk-your", "xxx")


class AppEnv(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


@dataclass(frozen=True)
class EncryptionKey:
    key_id: str
    key: bytes


def parse_encryption_keys(value: str) -> list[EncryptionKey]:
    """Parse `KEYID:BASE64[,KEYID:BASE64...]`; each key is 32 bytes. The first one encrypts."""
    keys: list[EncryptionKey] = []
    for raw_entry in value.split(","):
        entry = raw_entry.strip()
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id.strip():
            raise ValueError("each entry must look like KEYID:BASE64")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"key {key_id.strip()!r} is not valid base64") from exc
        if len(key) != 32:
            raise ValueError(f"key {key_id.strip()!r} must decode to 32 bytes, got {len(key)}")
        keys.append(EncryptionKey(key_id=key_id.strip(), key=key))
    if not keys:
        raise ValueError("at least one key is required")
    if len({k.key_id for k in keys}) != len(keys):
        raise ValueError("key ids must be unique")
    return keys


class Settings(BaseSettings):
    """Every setting the system reads. See `.env.example` for what each one means."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    app_env: AppEnv = AppEnv.DEV
    database_url: SecretStr = SecretStr(DEV_DATABASE_URL)
    database_direct_url: SecretStr | None = None
    supabase_url: str | None = None
    supabase_anon_key: SecretStr | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_jwt_secret: SecretStr | None = SecretStr(DEV_JWT_SECRET)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    secrets_encryption_key: SecretStr = SecretStr(DEV_ENCRYPTION_KEY)
    sentry_dsn: SecretStr | None = None
    rate_limit_chat_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 20
    max_active_deployments: Annotated[int, Field(ge=1, le=1_000)] = 10
    catalog_cache_seconds: Annotated[float, Field(ge=0, le=3_600)] = 5.0
    chat_wait_seconds: Annotated[float, Field(ge=0, le=600)] = 60.0
    sse_ping_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0
    worker_metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    # `format: uri` config fields take https URLs only; this lets http ones through (development).
    allow_http_urls: bool = False
    log_level: str = "info"

    @field_validator(
        "database_direct_url",
        "supabase_url",
        "supabase_anon_key",
        "supabase_service_role_key",
        "supabase_jwt_secret",
        "openai_api_key",
        "openai_base_url",
        "sentry_dsn",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("secrets_encryption_key")
    @classmethod
    def _valid_keys(cls, value: SecretStr) -> SecretStr:
        parse_encryption_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _no_placeholders_outside_dev(self) -> Settings:
        if self.app_env is AppEnv.DEV:
            return self
        for name in (
            "database_url",
            "supabase_jwt_secret",
            "openai_api_key",
            "secrets_encryption_key",
            "supabase_anon_key",
            "supabase_service_role_key",
        ):
            value = getattr(self, name)
            if value is not None and _is_placeholder(value.get_secret_value()):
                raise ValueError(f"{name.upper()} is a placeholder; set a real value")
        return self

    @property
    def direct_database_url(self) -> str:
        """The session-level connection (LISTEN, queue claims); defaults to DATABASE_URL."""
        url = self.database_direct_url or self.database_url
        return url.get_secret_value()

    @property
    def encryption_keys(self) -> list[EncryptionKey]:
        return parse_encryption_keys(self.secrets_encryption_key.get_secret_value())

    @property
    def jwt_issuer(self) -> str | None:
        return f"{self.supabase_url.rstrip('/')}/auth/v1" if self.supabase_url else None


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment; keyword overrides win (tests use them)."""
    return Settings(**overrides)  # type: ignore[arg-type]


@dataclass(frozen=True)
class EnvProblem:
    setting: str
    problem: str
    required: bool


def _is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return any(lowered.startswith(p) for p in PLACEHOLDER_PREFIXES)


def check_env(settings: Settings) -> list[EnvProblem]:
    """What is missing or still a placeholder for this APP_ENV.

    In dev the local defaults are fine and only the optional integrations are reported. Outside dev
    the database, JWT verification and encryption key must be real values, not the dev defaults.
    """
    strict = settings.app_env is AppEnv.PROD
    problems: list[EnvProblem] = []

    def secret(name: str, value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    db = settings.database_url.get_secret_value()
    if strict and db == DEV_DATABASE_URL:
        problems.append(EnvProblem("DATABASE_URL", "still the local development database", True))

    jwt_secret = secret("SUPABASE_JWT_SECRET", settings.supabase_jwt_secret)
    if jwt_secret is None and not settings.supabase_url:
        problems.append(
            EnvProblem(
                "SUPABASE_JWT_SECRET",
                "no way to verify tokens: set SUPABASE_JWT_SECRET and/or SUPABASE_URL (JWKS)",
                True,
            )
        )
    elif jwt_secret is not None:
        if strict and jwt_secret == DEV_JWT_SECRET:
            problems.append(
                EnvProblem("SUPABASE_JWT_SECRET", "still the public local-stack secret", True)
            )
        elif _is_placeholder(jwt_secret):
            problems.append(EnvProblem("SUPABASE_JWT_SECRET", "is a placeholder", True))
        elif len(jwt_secret) < 32:
            problems.append(EnvProblem("SUPABASE_JWT_SECRET", "shorter than 32 characters", True))

    if strict and settings.secrets_encryption_key.get_secret_value() == DEV_ENCRYPTION_KEY:
        problems.append(
            EnvProblem(
                "SECRETS_ENCRYPTION_KEY", "still the development key from .env.example", True
            )
        )

    if strict and not settings.supabase_url:
        problems.append(EnvProblem("SUPABASE_URL", "not set (token issuer is not checked)", True))

    openai_key = secret("OPENAI_API_KEY", settings.openai_api_key)
    if openai_key is None:
        problems.append(
            EnvProblem(
                "OPENAI_API_KEY",
                "not set: agents without a user-supplied key use the offline model"
                if not strict
                else "not set: agents without a user-supplied key cannot answer",
                strict,
            )
        )
    elif _is_placeholder(openai_key):
        problems.append(EnvProblem("OPENAI_API_KEY", "is a placeholder", True))

    for name, value in (
        ("SUPABASE_ANON_KEY", settings.supabase_anon_key),
        ("SUPABASE_SERVICE_ROLE_KEY", settings.supabase_service_role_key),
    ):
        raw = secret(name, value)
        if raw is None:
            problems.append(
                EnvProblem(name, "not set (only needed by hosted-project scripts)", False)
            )
        elif _is_placeholder(raw):
            problems.append(EnvProblem(name, "is a placeholder", strict))

    if strict and settings.allow_http_urls:
        problems.append(
            EnvProblem("ALLOW_HTTP_URLS", "set: agent configs may hold plain http:// URLs", False)
        )

    if settings.sentry_dsn is None:
        problems.append(EnvProblem("SENTRY_DSN", "not set: errors are not sent to Sentry", False))

    return problems
