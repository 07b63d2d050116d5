"""agentmarket.core.sentry without a network: the scrubber (each pattern, nested structures, secret
keys and headers, registered writeOnly values and the process's own secrets), the release, the
helpers' no-op without a DSN, and a job run in process with a collecting transport: a forced
crash is an event with the job's tags and no secret, a model failure only a breadcrumb."""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from agentmarket.core import sentry
from agentmarket.core.config import Settings
from agentmarket.core.faults import FAULT_MARKER
from agentmarket.domain.agents import Turn
from agentmarket.llm.client import Completed, LLMError, TextDelta, TokenUsage
from tests.unit.workers.fakes import (
    BOX,
    USER_KEY,
    FakeModel,
    FakeStore,
    make_context,
    make_job,
    make_loaded,
    sealed_key,
)
from workers.config import WorkerConfig
from workers.context import ModelDefaults
from workers.job import JobRunner
from workers.lease import JobSignals

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl"
KEY = "sk-proj-abcdefghijklmnop1234"
DSN = "http://public@127.0.0.1:9/1"


def test_the_scrubber_removes_keys_jwts_and_bearer_credentials_from_any_text() -> None:
    event = {
        "message": f"failed with {KEY}",
        "exception": {"values": [{"value": f"token {JWT} rejected"}]},
        "breadcrumbs": {"values": [{"message": f"Authorization: Bearer {KEY[3:]}"}]},
    }
    text = json.dumps(sentry.scrub_event(event, {}))
    assert KEY not in text and KEY[3:] not in text and JWT not in text
    assert "sk-[redacted]" in text and "[redacted-jwt]" in text and "Bearer [redacted]" in text


def test_the_scrubber_replaces_secret_keys_and_headers_whole_at_any_depth() -> None:
    event = {
        "request": {
            "headers": {
                "Authorization": "Basic dXNlcjpwYXNz",
                "Cookie": "session=abc",
                "X-Request-ID": "req-1",
            },
            "query_string": f"a=1&jwt={JWT}",
        },
        "extra": {
            "nested": [({"webhook_token": "plain-token-value"},), {"config": {"api_key": 42}}]
        },
    }
    cleaned = sentry.scrub_event(event, {})
    headers = cleaned["request"]["headers"]
    assert headers == {
        "Authorization": "[redacted]",
        "Cookie": "[redacted]",
        "X-Request-ID": "req-1",
    }
    assert cleaned["request"]["query_string"] == "a=1&jwt=[redacted-jwt]"
    nested = cleaned["extra"]["nested"]
    assert nested[0] == ({"webhook_token": "[redacted]"},)
    assert nested[1] == {"config": {"api_key": "[redacted]"}}


def test_registered_write_only_values_are_replaced_in_their_context_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sentry, "_active", True)
    secret = "correct-horse-battery-staple"  # matches no pattern: only registration finds it
    event = {"exception": {"values": [{"value": f"webhook refused {secret}"}]}}

    def in_job() -> Any:
        sentry.register_secrets([secret, None, "short"])
        return sentry.scrub_event(event, {}), sentry.scrub_breadcrumb({"data": [secret]}, {})

    scrubbed, crumb = contextvars.copy_context().run(in_job)
    assert scrubbed["exception"]["values"][0]["value"] == "webhook refused [redacted]"
    assert crumb == {"data": ["[redacted]"]}
    # Another job's context does not know it (nor keeps it).
    assert sentry.scrub_event(event, {}) == event


def test_the_process_secrets_are_its_keys_and_passwords_not_the_public_local_ones() -> None:
    settings = Settings(
        openai_api_key=SecretStr("sk-platform-0123456789"),
        supabase_jwt_secret=SecretStr("a-jwt-secret-that-is-long-enough-to-be-real"),
        database_url=SecretStr("postgresql://postgres:postgres@127.0.0.1:5432/postgres"),
        worker_database_url=SecretStr(
            "postgresql://agentmarket_worker:s3cret-worker-pw@db/postgres"
        ),
    )
    found = sentry._settings_secrets(settings)
    assert "sk-platform-0123456789" in found
    assert "a-jwt-secret-that-is-long-enough-to-be-real" in found
    assert "s3cret-worker-pw" in found
    assert "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" in found  # the encryption key's base64
    assert "postgres" not in found


def test_the_release_is_the_version_and_the_revision() -> None:
    assert sentry.release(Settings(sentry_release="web@42")) == "web@42"
    assert sentry.release(Settings(git_sha="0123456789abcdef")).endswith("+0123456789ab")
    assert sentry.release(Settings(git_sha="0123456789abcdef")).startswith("agentmarket@")


def test_without_a_dsn_nothing_is_set_up_and_the_helpers_do_nothing() -> None:
    assert not sentry.init_sentry(Settings(), process="api")
    assert not sentry.enabled()
    assert sentry.traceparent() is None
    with sentry.span("db", "x") as span:
        assert span is None
    structlog.contextvars.clear_contextvars()
    sentry.bind_context(user_id="u-1")
    assert structlog.contextvars.get_contextvars() == {"user_id": "u-1"}
    structlog.contextvars.clear_contextvars()


def test_a_trace_id_is_read_from_a_sentry_trace_value_or_kept() -> None:
    trace = "0123456789abcdef0123456789abcdef"
    assert sentry.trace_id_of(f"{trace}-0123456789abcdef-1") == trace
    assert sentry.trace_id_of("req-1") == "req-1"
    assert sentry.trace_id_of(None) is None


class Collected(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [
            item.payload.json
            for envelope in self.envelopes
            for item in envelope.items
            if item.type == kind and item.payload.json is not None
        ]

    def raw(self) -> bytes:
        return b"".join(envelope.serialize() for envelope in self.envelopes)


@pytest.fixture
def collected() -> Iterator[Collected]:
    transport = Collected()
    settings = Settings(sentry_dsn=SecretStr(DSN), sentry_traces_sample_rate=1.0)
    assert sentry.init_sentry(settings, process="worker", expected=(LLMError,), transport=transport)
    try:
        yield transport
    finally:
        sentry.close()


def _runner(store: FakeStore, model: FakeModel, *, test_faults: bool) -> JobRunner:
    return JobRunner(
        store,
        model,
        BOX,
        config=WorkerConfig(worker_id="w-test", test_faults=test_faults),
        defaults=ModelDefaults(model="gpt-platform", max_tokens=1000),
    )


def _store(text: str) -> FakeStore:
    context = make_context(requires_user_key=True)
    return FakeStore(
        loaded=make_loaded(context, history=[Turn("user", text)], secrets=[sealed_key(context)])
    )


async def _run(runner: JobRunner) -> None:
    await asyncio.create_task(runner.run(make_job(), JobSignals()))


async def test_a_crash_in_a_job_is_an_event_with_its_tags_and_without_its_secrets(
    collected: Collected,
) -> None:
    failing = FakeModel(LLMError("upstream_unavailable", "down", transient=True, attempts=4))
    await _run(_runner(_store("first"), failing, test_faults=True))
    store = _store(f"{FAULT_MARKER} token {JWT}")
    await _run(_runner(store, FakeModel(), test_faults=True))
    sentry.flush()

    assert store.finished[0].outcome.error_code == "internal_error"
    [event] = collected.items("event")  # the model failure before it is no event
    assert event["exception"]["values"][-1]["type"] == "ForcedFault"
    context = store.loaded.context if store.loaded else None
    assert context is not None
    assert event["tags"]["deployment_id"] == str(context.deployment_id)
    assert event["tags"]["user_id"] == str(context.user_id)
    assert event["tags"]["conversation_id"] == str(context.conversation_id)
    assert event["tags"]["job_id"] == "7"
    assert event["tags"]["agent"] == "rev"
    crumbs = [c for c in event["breadcrumbs"]["values"] if c["category"] == "model"]
    assert crumbs[-1]["data"] == {"error_code": "upstream_unavailable", "attempts": 4}
    raw = collected.raw()
    assert USER_KEY.encode() not in raw and JWT.encode() not in raw


async def test_without_test_faults_the_marker_is_only_text(collected: Collected) -> None:
    store = _store(f"{FAULT_MARKER} hello")
    answer = FakeModel(TextDelta("hi"), Completed(TokenUsage(1, 1), "gpt-x", "stop"))
    await _run(_runner(store, answer, test_faults=False))
    sentry.flush()
    assert store.finished[0].outcome.status == "completed"
    assert collected.items("event") == []
    [transaction] = collected.items("transaction")
    assert transaction["contexts"]["trace"]["op"] == "queue.process"
