"""Settings: one pydantic-settings class read from the environment (and `.env`), built by a
function.

Nothing here connects to anything; callers build `Settings` and pass it on. Tests build their own.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentmarket.core import paths

__all__ = [
    "API_LOGIN",
    "DEV_DATABASE_URL",
    "DEV_ENCRYPTION_KEY",
    "DEV_JWT_SECRET",
    "LOCAL_LOGIN_PASSWORDS",
    "PLACEHOLDER_PREFIXES",
    "WORKER_LOGIN",
    "AppEnv",
    "EncryptionKey",
    "EnvProblem",
    "MissingSetting",
    "Settings",
    "check_env",
    "get_settings",
    "local_login_url",
    "parse_cors_origins",
    "parse_encryption_keys",
]

# Values in .env.example that are fine on a laptop and wrong anywhere else.
DEV_DATABASE_URL = "postgresql://postgres:postgres@127.0.0.1:54322/postgres"
# The JWT secret of Supabase's local stack (public, documented, useless outside a laptop).
DEV_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"  # noqa: S105
DEV_ENCRYPTION_KEY = "dev:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PLACEHOLDER_PREFIXES = ("change-me", "changeme", "your-", "<", "sk-your", "xxx")

# The processes' own database logins (created by the migrations, NOLOGIN until an operator gives
# them a password). On a plain local PostgreSQL in dev/test, `agentmarket migrate` lets them log in
# with these public passwords, and API_DATABASE_URL / WORKER_DATABASE_URL default to them.
API_LOGIN = "agentmarket_api"
WORKER_LOGIN = "agentmarket_worker"
LOCAL_LOGIN_PASSWORDS = {
    API_LOGIN: "agentmarket-api-local",
    WORKER_LOGIN: "agentmarket-worker-local",
}


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


def parse_cors_origins(value: object) -> tuple[str, ...]:
    """CORS_ALLOW_ORIGINS: comma-separated exact origins (`scheme://host[:port]`), or `*` alone.

    Each origin is normalised as a browser sends it in `Origin` (lower case, no default port, no
    trailing slash); anything with a path, query, user or wildcard host is refused, since it
    would never match and hide a typo. `*` is allowed because credentials never are (bearer
    tokens, no cookies: docs/operations.md#other-origins-cors)."""
    if value is None:
        return ()
    entries = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    origins: list[str] = []
    for raw in entries:
        entry = str(raw).strip()
        if not entry:
            continue
        if entry == "*":
            origins.append("*")
            continue
        try:
            parts = urlsplit(entry)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an origin (scheme://host[:port])") from exc
        host = (parts.hostname or "").lower()
        if (
            parts.scheme.lower() not in ("http", "https")
            or not host
            or "*" in host
            or parts.username is not None
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{entry!r} is not an origin (scheme://host[:port])")
        scheme = parts.scheme.lower()
        if port is not None and port == {"http": 80, "https": 443}[scheme]:
            port = None
        shown = f"[{host}]" if ":" in host else host
        origins.append(f"{scheme}://{shown}" + (f":{port}" if port is not None else ""))
    if "*" in origins and len(origins) > 1:
        raise ValueError("`*` allows every origin: give it alone, not with other origins")
    return tuple(dict.fromkeys(origins))


class Settings(BaseSettings):
    """Every setting the system reads. See `.env.example` for what each one means."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    app_env: AppEnv = AppEnv.DEV
    database_url: SecretStr = SecretStr(DEV_DATABASE_URL)
    database_direct_url: SecretStr | None = None
    api_database_url: SecretStr | None = None
    api_database_direct_url: SecretStr | None = None
    worker_database_url: SecretStr | None = None
    supabase_url: str | None = None
    supabase_anon_key: SecretStr | None = None
    supabase_service_role_key: SecretStr | None = None
    supabase_jwt_secret: SecretStr | None = SecretStr(DEV_JWT_SECRET)
    # `agentmarket verify --hosted`: a test user of the hosted project for its signed-in checks
    # (docs/operations.md#checking-a-hosted-project), by password or by an access token.
    verify_user_email: str | None = None
    verify_user_password: SecretStr | None = None
    verify_access_token: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    openai_max_tokens: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    # The SDK's HTTP transport in the worker (docs/operations.md#model-calls-and-retries).
    openai_http_backend: Literal["httpx", "aiohttp"] = "aiohttp"
    # The fallback model (docs/operations.md#the-fallback-model): on when OPENAI_FALLBACK_MODEL is
    # set; the base URL defaults to OPENAI_BASE_URL, the key to OPENAI_API_KEY only then.
    openai_fallback_base_url: str | None = None
    openai_fallback_model: str | None = None
    openai_fallback_api_key: SecretStr | None = None
    secrets_encryption_key: SecretStr = SecretStr(DEV_ENCRYPTION_KEY)
    sentry_dsn: SecretStr | None = None
    # Error tracking and tracing (docs/operations.md#error-tracking-and-tracing).
    sentry_traces_sample_rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    sentry_release: str | None = None
    git_sha: str | None = None
    # Limits (docs/api.md#limits). Those marked (db) are enforced by the database and stored in
    # private.app_settings by `agentmarket migrate`; the others by each functions instance.
    rate_limit_chat_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 20  # (db)
    rate_limit_deploy_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 10  # (db)
    rate_limit_conversations_per_minute: Annotated[int, Field(ge=1, le=10_000)] = 30  # (db)
    chat_max_in_flight_per_user: Annotated[int, Field(ge=1, le=10_000)] = 4  # (db)
    platform_tokens_per_user_per_day: Annotated[int, Field(ge=0, le=10**12)] = 100_000  # (db)
    max_active_deployments: Annotated[int, Field(ge=1, le=1_000)] = 10  # (db)
    max_deployments_per_user: Annotated[int, Field(ge=1, le=100_000)] = 25  # (db)
    max_open_streams_per_user: Annotated[int, Field(ge=1, le=10_000)] = 20
    max_knowledge_base_bytes: Annotated[int, Field(ge=1_024, le=100_000_000)] = 262_144
    max_page_bytes: Annotated[int, Field(ge=65_536, le=100_000_000)] = 1_048_576
    catalog_cache_seconds: Annotated[float, Field(ge=0, le=3_600)] = 5.0
    chat_wait_seconds: Annotated[float, Field(ge=0, le=600)] = 60.0
    sse_ping_seconds: Annotated[float, Field(gt=0, le=300)] = 15.0
    # How long a request waits for the database (a pooled connection, a new connection) before
    # it answers 503 database_unavailable with Retry-After (docs/operations.md#database-outages).
    db_unavailable_timeout_seconds: Annotated[float, Field(ge=1, le=60)] = 5.0
    # SIGTERM: in-flight requests get this long to finish; open streams end at once with
    # `stream.closing` (docs/operations.md#graceful-shutdown).
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=600)] = 30.0
    worker_metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    # `format: uri` config fields take https URLs only; this lets http ones through (development).
    allow_http_urls: bool = False
    log_level: str = "info"
    # The web client (docs/operations.md#the-web-client): the built client the functions serve at
    # `/` (default <repo>/web/dist), and the other origins whose pages may call the API from a
    # browser (empty: none, no CORS headers at all).
    web_dist_dir: Path | None = None
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator(
        "database_direct_url",
        "api_database_url",
        "api_database_direct_url",
        "worker_database_url",
        "supabase_url",
        "supabase_anon_key",
        "supabase_service_role_key",
        "supabase_jwt_secret",
        "verify_user_email",
        "verify_user_password",
        "verify_access_token",
        "openai_api_key",
        "openai_base_url",
        "openai_fallback_base_url",
        "openai_fallback_model",
        "openai_fallback_api_key",
        "sentry_dsn",
        "sentry_release",
        "git_sha",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("web_dist_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> tuple[str, ...]:
        return parse_cors_origins(value)

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
            "api_database_url",
            "api_database_direct_url",
            "worker_database_url",
            "supabase_jwt_secret",
            "openai_api_key",
            "openai_fallback_api_key",
            "secrets_encryption_key",
            "supabase_anon_key",
            "supabase_service_role_key",
            "verify_user_password",
            "verify_access_token",
        ):
            value = getattr(self, name)
            if value is not None and _is_placeholder(value.get_secret_value()):
                raise ValueError(f"{name.upper()} is a placeholder; set a real value")
        return self

    @property
    def direct_database_url(self) -> str:
        """The operator's session-level connection (migrations); defaults to DATABASE_URL."""
        url = self.database_direct_url or self.database_url
        return url.get_secret_value()

    @property
    def api_url(self) -> str:
        """The HTTP functions' login (request pool, telemetry, /readyz): it can only become anon
        or authenticated. In dev/test it defaults to the local `agentmarket_api` login on
        DATABASE_URL's server and database; in prod API_DATABASE_URL is required."""
        if self.api_database_url is not None:
            return self.api_database_url.get_secret_value()
        return self._local_login(
            "API_DATABASE_URL", self.database_url.get_secret_value(), API_LOGIN
        )

    @property
    def api_direct_url(self) -> str:
        """The functions' session connection for LISTEN (a transaction pooler drops
        notifications): API_DATABASE_DIRECT_URL, else API_DATABASE_URL, else (dev/test) the local
        login on DATABASE_DIRECT_URL's server."""
        if self.api_database_direct_url is not None:
            return self.api_database_direct_url.get_secret_value()
        if self.api_database_url is not None:
            return self.api_database_url.get_secret_value()
        return self._local_login("API_DATABASE_URL", self.direct_database_url, API_LOGIN)

    @property
    def worker_url(self) -> str:
        """The chat worker's service login (a session connection: LISTEN and queue claims). In
        dev/test it defaults to the local `agentmarket_worker` login on DATABASE_DIRECT_URL's
        server and database; in prod WORKER_DATABASE_URL is required."""
        if self.worker_database_url is not None:
            return self.worker_database_url.get_secret_value()
        return self._local_login("WORKER_DATABASE_URL", self.direct_database_url, WORKER_LOGIN)

    def _local_login(self, setting: str, base_url: str, login: str) -> str:
        if self.app_env is AppEnv.PROD:
            raise MissingSetting(f"{setting} is required when APP_ENV=prod")
        return local_login_url(base_url, login)

    @property
    def encryption_keys(self) -> list[EncryptionKey]:
        return parse_encryption_keys(self.secrets_encryption_key.get_secret_value())

    @property
    def web_dist(self) -> Path:
        """The built web client's directory (it may not exist: the API works without it)."""
        return self.web_dist_dir or paths.project_root() / "web" / "dist"

    @property
    def jwt_issuer(self) -> str | None:
        return f"{self.supabase_url.rstrip('/')}/auth/v1" if self.supabase_url else None


class MissingSetting(ValueError):
    """A setting this process needs is not set (e.g. API_DATABASE_URL in prod)."""


def local_login_url(base_url: str, login: str) -> str:
    """`base_url`'s server, port, database and options with a local login and its password."""
    params = conninfo_to_dict(base_url)
    params.update(user=login, password=LOCAL_LOGIN_PASSWORDS[login])
    return make_conninfo(**params)  # type: ignore[arg-type]


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

    if strict and settings.database_url.get_secret_value() == DEV_DATABASE_URL:
        problems.append(EnvProblem("DATABASE_URL", "still the local development database", True))

    problems.extend(_login_problems(settings, strict))
    problems.extend(_jwt_problems(settings, strict))

    if strict and settings.secrets_encryption_key.get_secret_value() == DEV_ENCRYPTION_KEY:
        problems.append(
            EnvProblem(
                "SECRETS_ENCRYPTION_KEY", "still the development key from .env.example", True
            )
        )

    if strict and not settings.supabase_url:
        problems.append(EnvProblem("SUPABASE_URL", "not set (token issuer is not checked)", True))

    problems.extend(_openai_problems(settings, strict))
    problems.extend(_supabase_key_problems(settings, strict))

    if strict and settings.allow_http_urls:
        problems.append(
            EnvProblem("ALLOW_HTTP_URLS", "set: agent configs may hold plain http:// URLs", False)
        )

    if strict and "*" in settings.cors_allow_origins:
        problems.append(
            EnvProblem("CORS_ALLOW_ORIGINS", "`*`: pages on any site may call the API", False)
        )

    if settings.sentry_dsn is None:
        problems.append(EnvProblem("SENTRY_DSN", "not set: errors are not sent to Sentry", False))

    return problems


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _jwt_problems(settings: Settings, strict: bool) -> list[EnvProblem]:
    """Tokens must be verifiable (a secret and/or JWKS), with a real secret when there is one."""
    name = "SUPABASE_JWT_SECRET"
    jwt_secret = _secret(settings.supabase_jwt_secret)
    if jwt_secret is None:
        if settings.supabase_url:
            return []
        return [
            EnvProblem(
                name,
                "no way to verify tokens: set SUPABASE_JWT_SECRET and/or SUPABASE_URL (JWKS)",
                True,
            )
        ]
    if strict and jwt_secret == DEV_JWT_SECRET:
        return [EnvProblem(name, "still the public local-stack secret", True)]
    if _is_placeholder(jwt_secret):
        return [EnvProblem(name, "is a placeholder", True)]
    if len(jwt_secret) < 32:
        return [EnvProblem(name, "shorter than 32 characters", True)]
    return []


def _openai_problems(settings: Settings, strict: bool) -> list[EnvProblem]:
    openai_key = _secret(settings.openai_api_key)
    if openai_key is None:
        return [
            EnvProblem(
                "OPENAI_API_KEY",
                "not set: agents without a user-supplied key use the offline model"
                if not strict
                else "not set: agents without a user-supplied key cannot answer",
                strict,
            )
        ]
    if _is_placeholder(openai_key):
        return [EnvProblem("OPENAI_API_KEY", "is a placeholder", True)]
    return _fallback_problems(settings)


def _fallback_problems(settings: Settings) -> list[EnvProblem]:
    """A fallback model asked for (OPENAI_FALLBACK_MODEL) on another provider needs its own key:
    the platform key is never sent elsewhere, so without one the worker leaves the fallback off."""
    if (
        settings.openai_fallback_model
        and settings.openai_fallback_base_url is not None
        and settings.openai_fallback_api_key is None
    ):
        return [
            EnvProblem(
                "OPENAI_FALLBACK_API_KEY",
                "not set: the fallback model on OPENAI_FALLBACK_BASE_URL stays off",
                False,
            )
        ]
    return []


def _supabase_key_problems(settings: Settings, strict: bool) -> list[EnvProblem]:
    problems: list[EnvProblem] = []
    for name, value in (
        ("SUPABASE_ANON_KEY", settings.supabase_anon_key),
        ("SUPABASE_SERVICE_ROLE_KEY", settings.supabase_service_role_key),
    ):
        raw = _secret(value)
        if raw is None:
            problems.append(
                EnvProblem(name, "not set (only needed by hosted-project scripts)", False)
            )
        elif _is_placeholder(raw):
            problems.append(EnvProblem(name, "is a placeholder", strict))
    return problems


def _login_problems(settings: Settings, strict: bool) -> list[EnvProblem]:
    """The processes' own logins: required in prod, never the operator's login, never a local
    password there."""
    problems: list[EnvProblem] = []
    operator = conninfo_to_dict(settings.database_url.get_secret_value()).get("user")
    for name, value, login in (
        ("API_DATABASE_URL", settings.api_database_url, API_LOGIN),
        ("API_DATABASE_DIRECT_URL", settings.api_database_direct_url, API_LOGIN),
        ("WORKER_DATABASE_URL", settings.worker_database_url, WORKER_LOGIN),
    ):
        if value is None:
            if strict and name != "API_DATABASE_DIRECT_URL":
                problems.append(
                    EnvProblem(name, f"not set: the {login} login's connection is required", True)
                )
            continue
        try:
            params = conninfo_to_dict(value.get_secret_value())
        except ProgrammingError:  # never echo the value: it may hold a password
            problems.append(EnvProblem(name, "not a valid connection string", True))
            continue
        user = params.get("user")
        if user is not None and user == operator:
            problems.append(
                EnvProblem(
                    name,
                    f"logs in as {user}, the operator's DATABASE_URL login: use a "
                    "least-privilege login (docs/operations.md)",
                    strict,
                )
            )
        if strict and params.get("password") in LOCAL_LOGIN_PASSWORDS.values():
            problems.append(EnvProblem(name, "still the local development password", True))
    return problems
