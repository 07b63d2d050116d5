"""Error tracking and tracing with Sentry (docs/operations.md#error-tracking-and-tracing).

Nothing happens at import, and nothing at all without SENTRY_DSN: the functions app and the
worker call `init_sentry` when they start; until then (and in every test without a DSN) each
helper below is a flag test and returns.

* **Events** are for unexpected exceptions only, captured where they are caught
  (`capture_unexpected`: the API's 500 handler, the worker's job crash) or left uncaught.
  Expected outcomes are not events: an `AppError` (a 4xx, a 503), a model failure after its
  retries (the worker adds a breadcrumb instead: `breadcrumb`), a cancelled reply. Our log lines
  never become events: structlog writes them to stderr itself, not through `logging`; records of
  the standard `logging` module (libraries: psycopg_pool, uvicorn) become breadcrumbs from
  WARNING up, never events.
* **Context**: `bind_context` binds values to the structlog context and, for the ids in `TAGS`,
  as tags of the request's or job's scope, at once.
* **Scrubbing**: every event, transaction and breadcrumb passes `scrub_event` /
  `scrub_breadcrumb`: values under secret-like keys (and Cookie headers) are replaced whole, and
  any text is cleaned of API keys, JWTs and bearer credentials with the same rules as the log
  lines (agentmarket.core.redaction), and of every secret value this process holds (its own
  settings' keys and passwords) or the current job registered (`register_secrets`: the
  deployment's decrypted writeOnly values). Request bodies and local variables are never sent.
* **Tracing**: the FastAPI integration makes a transaction per request; `job_transaction` one
  per job, continuing the request's trace (the job carries the send's `traceparent()`);
  `span`, `db_span` and `record_span` add children only when a sampled transaction is current.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

import sentry_sdk
import structlog
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration
from sentry_sdk.tracing import Span
from sentry_sdk.transport import Transport

from agentmarket.core.config import LOCAL_LOGIN_PASSWORDS, Settings
from agentmarket.core.errors import AppError
from agentmarket.core.redaction import is_secret_key, scrub

__all__ = [
    "TAGS",
    "Span",
    "bind_context",
    "breadcrumb",
    "capture_unexpected",
    "close",
    "current_trace_id",
    "db_span",
    "enabled",
    "flush",
    "init_sentry",
    "job_transaction",
    "record_span",
    "register_secrets",
    "release",
    "scrub_breadcrumb",
    "scrub_event",
    "set_tags",
    "span",
    "trace_id_of",
    "traceparent",
]

# The ids an event or transaction is tagged with (never an email or a name).
TAGS: Final = frozenset(
    {
        "user_id",
        "agent",
        "deployment_id",
        "conversation_id",
        "message_id",
        "job_id",
        "request_id",
        "trace_id",
    }
)

REDACTED: Final = "[redacted]"
# Headers whose values go whole, besides the secret-like keys of agentmarket.core.redaction.
_SECRET_HEADERS: Final = frozenset({"cookie", "set-cookie", "proxy-authorization", "x-api-key"})
# Shorter values are not treated as secrets to replace in text (they would mangle words).
_MIN_SECRET_LENGTH: Final = 8
# `sentry-trace`: trace id, parent span id, sampled flag.
_TRACEPARENT: Final = re.compile(r"^([0-9a-f]{32})-([0-9a-f]{16})(?:-[01])?$")

_active = False
_process_secrets: tuple[str, ...] = ()
_job_secrets: ContextVar[tuple[str, ...]] = ContextVar("agentmarket_sentry_secrets", default=())
_NULL: Final[AbstractContextManager[None]] = contextlib.nullcontext()


def enabled() -> bool:
    """Whether `init_sentry` set up a client in this process."""
    return _active


def init_sentry(
    settings: Settings,
    *,
    process: Literal["api", "worker"],
    expected: Sequence[type[BaseException]] = (),
    transport: Transport | None = None,
) -> bool:
    """Set up Sentry for this process when SENTRY_DSN is set (else nothing; False).

    `expected`: exception types that are outcomes, never events, besides `AppError` (the worker
    passes `LLMError`). `transport`: where envelopes go instead of the DSN's server (tests).
    The API gets the FastAPI/Starlette integration (a transaction per
    request, named by route; no event for any HTTP status: our middleware captures what is
    unexpected). No other integration is enabled on its own (the OpenAI or httpx ones would
    wrap every streamed chunk, or send trace headers to the model's provider)."""
    global _active, _process_secrets
    if settings.sentry_dsn is None:
        return False
    integrations: list[Integration] = [
        LoggingIntegration(level=logging.WARNING, event_level=None),
    ]
    if process == "api":
        integrations += [
            StarletteIntegration(failed_request_status_codes=set(), middleware_spans=False),
            FastApiIntegration(failed_request_status_codes=set(), middleware_spans=False),
        ]
    _process_secrets = _settings_secrets(settings)
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        release=release(settings),
        environment=settings.app_env.value,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        include_local_variables=False,
        max_request_body_size="never",
        ignore_errors=[AppError, *expected],
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        integrations=integrations,
        auto_enabling_integrations=False,
        trace_propagation_targets=[],
        shutdown_timeout=2,
        transport=transport,
    )
    sentry_sdk.set_tag("process", process)
    _active = True
    return True


def flush(timeout: float = 2.0) -> None:
    """Send what is queued (on shutdown), waiting at most `timeout` seconds."""
    if _active:
        sentry_sdk.flush(timeout=timeout)


def close() -> None:
    """Send what is queued and stop reporting (tests; a process just exits)."""
    global _active
    if _active:
        sentry_sdk.get_client().close(timeout=2)
        _active = False


def release(settings: Settings) -> str:
    """SENTRY_RELEASE, else `agentmarket@<version>` plus `+<git revision>` when known (GIT_SHA,
    else `git rev-parse` in the checkout, which may fail quietly: an installed package has
    none)."""
    if settings.sentry_release:
        return settings.sentry_release
    try:
        version = importlib.metadata.version("agentmarket")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    revision = settings.git_sha or _git_revision()
    return f"agentmarket@{version}+{revision[:12]}" if revision else f"agentmarket@{version}"


def _git_revision() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{7,64}", revision) else None


# Context


def bind_context(**values: Any) -> None:
    """Bind `values` to the structlog context (every log line of this request or job) and, for
    the names in `TAGS`, as Sentry tags of the current request's or job's scope."""
    structlog.contextvars.bind_contextvars(**values)
    if _active:
        set_tags(values)


def set_tags(values: Mapping[str, Any]) -> None:
    """The names in `TAGS` among `values` (None skipped) as tags of the current scope."""
    if _active:
        sentry_sdk.set_tags({k: str(v) for k, v in values.items() if k in TAGS and v is not None})


def capture_unexpected(exc: BaseException) -> None:
    """Report an unexpected exception that was caught (and answered: a 500, a failed reply).
    An `AppError` is an outcome, never reported."""
    if not _active or isinstance(exc, AppError):
        return
    current = sentry_sdk.get_current_span()
    if current is not None:
        current.set_status("internal_error")
    sentry_sdk.capture_exception(exc)


def breadcrumb(category: str, message: str, **data: Any) -> None:
    """A breadcrumb on every later event of this process (the global scope): an expected failure
    worth knowing about when something unexpected happens next."""
    if _active:
        sentry_sdk.get_global_scope().add_breadcrumb(
            category=category, message=message, level="warning", data=data
        )


# Secrets


def register_secrets(values: Iterable[str | None]) -> None:
    """Secret values (a deployment's decrypted writeOnly config) to replace wherever they appear
    in an event, for the rest of the current context (the job's task)."""
    if not _active:
        return
    new = tuple(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)
    if new:
        _job_secrets.set(_job_secrets.get() + new)


def _settings_secrets(settings: Settings) -> tuple[str, ...]:
    """This process's own secrets: keys, the JWT secret, the encryption keys, the databases'
    passwords (except the public local ones)."""
    found: list[str] = []
    for value in (
        settings.openai_api_key,
        settings.supabase_service_role_key,
        settings.supabase_jwt_secret,
        settings.verify_user_password,
        settings.verify_access_token,
        settings.secrets_encryption_key,
    ):
        if value is not None:
            found.append(value.get_secret_value())
    for entry in settings.secrets_encryption_key.get_secret_value().split(","):
        found.append(entry.split(":", 1)[-1])  # each key's base64 on its own
    public = {"postgres", *LOCAL_LOGIN_PASSWORDS.values()}
    for url in (
        settings.database_url,
        settings.database_direct_url,
        settings.api_database_url,
        settings.api_database_direct_url,
        settings.worker_database_url,
    ):
        if url is None:
            continue
        try:
            password = conninfo_to_dict(url.get_secret_value()).get("password")
        except ProgrammingError:
            continue
        if isinstance(password, str) and password not in public:
            found.append(password)
    return tuple(sorted({s.strip() for s in found if len(s.strip()) >= _MIN_SECRET_LENGTH}))


def scrub_event(event: Any, hint: Any = None) -> Any:
    """`before_send` and `before_send_transaction`: the event with every secret removed."""
    return _clean(event, _process_secrets + _job_secrets.get())


def scrub_breadcrumb(crumb: Any, hint: Any = None) -> Any:
    """`before_breadcrumb`: the breadcrumb with every secret removed (it may be sent later, from
    another context, so it is cleaned now)."""
    return _clean(crumb, _process_secrets + _job_secrets.get())


def _clean(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        if len(value) < _MIN_SECRET_LENGTH:  # shorter than any pattern or registered secret
            return value
        text = scrub(value)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and (is_secret_key(key) or key.lower() in _SECRET_HEADERS)
            else _clean(item, secrets)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_clean(item, secrets) for item in value]
    if isinstance(value, tuple):
        return tuple(_clean(item, secrets) for item in value)
    return value


# Tracing


def traceparent() -> str | None:
    """The current trace as a `sentry-trace` value (`<trace id>-<span id>-<sampled>`), for work
    that continues it elsewhere (a chat job); None without Sentry."""
    return sentry_sdk.get_traceparent() if _active else None


def current_trace_id() -> str | None:
    """The current trace's id; None without Sentry."""
    return trace_id_of(traceparent())


def trace_id_of(value: str | None) -> str | None:
    """The trace id in a `sentry-trace` value; any other value (a request id) as it is."""
    if value is None:
        return None
    match = _TRACEPARENT.match(value)
    return match.group(1) if match else value


@contextlib.contextmanager
def job_transaction(name: str, *, op: str, trace: str | None) -> Iterator[None]:
    """A scope of its own (tags, secrets) and a transaction for one job, continuing the trace
    `trace` when it is a `sentry-trace` value (and following its sampling decision)."""
    if not _active:
        yield
        return
    with sentry_sdk.isolation_scope():
        headers = {"sentry-trace": trace} if trace and _TRACEPARENT.match(trace) else {}
        transaction = sentry_sdk.continue_trace(headers, op=op, name=name, source="task")
        with sentry_sdk.start_transaction(transaction):
            yield


def _parent() -> Span | None:
    if not _active:
        return None
    parent = sentry_sdk.get_current_span()
    return parent if parent is not None and parent.sampled else None


def span(op: str, name: str) -> AbstractContextManager[Span | None]:
    """A child span of the current sampled span; a no-op otherwise."""
    parent = _parent()
    return _NULL if parent is None else parent.start_child(op=op, name=name)


def db_span(name: str) -> AbstractContextManager[Span | None]:
    """A span for one named query (its name, op `db`)."""
    return span("db", name)


def record_span(op: str, name: str, *, duration: float, data: Mapping[str, Any]) -> None:
    """A child span for something that just ended after `duration` seconds (an attempt
    measured elsewhere), with `data`."""
    parent = _parent()
    if parent is None:
        return
    end = datetime.now(UTC)
    child = parent.start_child(op=op, name=name, start_timestamp=end - timedelta(seconds=duration))
    for key, value in data.items():
        child.set_data(key, value)
    child.finish(end_timestamp=end)
