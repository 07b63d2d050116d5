"""Sentry on the real processes: an API and a worker started with SENTRY_DSN pointing at a local
stand-in for Sentry's ingest endpoint, which keeps every envelope it is sent.

Unexpected errors (forced: agentmarket.core.faults, APP_ENV=test only) arrive as events tagged
with the request's and the job's ids, and no secret is anywhere in what was sent; a 404 and a
model failure after its retries send none. With every request traced, a chat send's transaction
(with its database spans) and its job's transaction (database, model and relay spans) arrive in
one trace."""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from agentmarket.core.faults import FAULT_HEADER, FAULT_MARKER
from tests.e2e.conftest import PLATFORM_KEY, Stack, deploy, sse_events, wait_http
from tests.procs import free_port

USER_KEY = "sk-offline-user-key-sentry-000000000000user"
NEW_KEY = "sk-offline-user-key-sentry-111111111111user"
# Key-like `sk-…` text; the redacted form `sk-[redacted]` is allowed.
SK_KEY = re.compile(rb"\bsk-[A-Za-z0-9_-]")


@dataclass
class Envelope:
    raw: bytes
    items: list[tuple[dict[str, Any], Any]]  # (item header, decoded payload)


def parse_envelope(raw: bytes) -> Envelope:
    """Sentry's envelope format: a header line, then items (a header line, a payload of
    `length` bytes or one line)."""
    _, _, rest = raw.partition(b"\n")
    items: list[tuple[dict[str, Any], Any]] = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :]
            rest = rest.removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            decoded: Any = json.loads(payload)
        except ValueError:
            decoded = payload
        items.append((header, decoded))
    return Envelope(raw, items)


@dataclass
class Ingest:
    """The stand-in for Sentry: keeps every envelope posted to it."""

    port: int
    envelopes: list[Envelope] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"

    def payloads(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for e in self.envelopes for h, p in e.items if h.get("type") == kind]

    def v2_spans(self) -> list[dict[str, Any]]:
        """Spans sent in batches beside their transaction (the SDK sends gen_ai spans so)."""
        return [span for batch in self.payloads("span") for span in batch.get("items", [])]

    def raw(self) -> bytes:
        with self.lock:
            return b"\n".join(e.raw for e in self.envelopes)

    def wait_for(
        self, kind: str, match: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [p for p in self.payloads(kind) if match(p)]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no {kind} arrived that matches; got {self.payloads(kind)}")


@pytest.fixture(scope="module")
def ingest() -> Iterator[Ingest]:
    sink = Ingest(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            with sink.lock:
                sink.envelopes.append(parse_envelope(body))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", sink.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Traced:
    api: str
    ingest: Ingest
    stack: Stack


@pytest.fixture(scope="module")
def traced(stack: Stack, ingest: Ingest) -> Traced:
    """An API and a worker that report to `ingest`, every request traced; the stack's own
    worker is stopped so that this one answers every reply."""
    for process in stack.processes:
        if process.name == "worker":
            process.stop()
    env = {"SENTRY_DSN": ingest.dsn, "SENTRY_TRACES_SAMPLE_RATE": "1.0", "GIT_SHA": "abc1234def"}
    port = free_port()
    api = stack.spawn("api-sentry", "serve", "--port", str(port), env=env)
    wait_http(f"http://127.0.0.1:{port}/readyz", api)
    stack.spawn("worker-sentry", "worker", "--concurrency", "4", "--lease-seconds", "10", env=env)
    return Traced(f"http://127.0.0.1:{port}", ingest, stack)


@contextmanager
def _client(traced: Traced, email: str) -> Iterator[tuple[httpx.Client, str, str]]:
    """A client of the traced API, its JWT and its user id."""
    token = traced.stack.token(email)
    payload = token.split(".")[1]
    user_id = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    with httpx.Client(
        base_url=traced.api, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as client:
        yield client, token, user_id


def _process(item: dict[str, Any]) -> str | None:
    tags: dict[str, str] = item.get("tags") or {}
    return tags.get("process")


def _exception_type(event: dict[str, Any]) -> str | None:
    values = (event.get("exception") or {}).get("values") or [{}]
    kind: str | None = values[-1].get("type")
    return kind


def _no_secret(raw: bytes, *secrets: str) -> None:
    for secret in secrets:
        assert secret.encode() not in raw, secret
    assert not SK_KEY.search(raw), SK_KEY.search(raw)
    assert b"eyJ" not in raw  # no JWT at all


def test_an_unexpected_error_in_a_route_is_a_500_and_a_scrubbed_event(traced: Traced) -> None:
    with _client(traced, "sentry-api@example.com") as (client, token, user_id):
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": USER_KEY})

        missing = client.get(f"/api/agents/{uuid.uuid4()}/conversations")
        assert missing.status_code == 404
        failed = client.patch(
            f"/api/deployments/{deployment}",
            json={"config": {"openai_api_key": NEW_KEY}},
            headers={FAULT_HEADER: "raise"},
        )
        assert failed.status_code == 500
        assert failed.headers["content-type"].startswith("application/problem+json")
        request_id = failed.headers["x-request-id"]

        event = traced.ingest.wait_for("event", lambda e: _process(e) == "api")
        assert _exception_type(event) == "ForcedFault"
        tags = event["tags"]
        assert tags["request_id"] == request_id
        assert tags["user_id"] == user_id
        assert tags["deployment_id"] == deployment
        assert re.fullmatch(r"[0-9a-f]{32}", tags["trace_id"])
        assert event["environment"] == "test"
        assert event["release"].endswith("+abc1234def")
        # The 404 before it sent no event: this is the API's only one.
        assert [
            _exception_type(e) for e in traced.ingest.payloads("event") if _process(e) == "api"
        ] == ["ForcedFault"]
        # The exception's text held the Authorization header; the body held the new key.
        _no_secret(traced.ingest.raw(), token, NEW_KEY, USER_KEY, PLATFORM_KEY)
        assert "(authorization: Bearer [redacted])" in event["exception"]["values"][-1]["value"]


def _send(client: httpx.Client, deployment: str, text: str) -> dict[str, Any]:
    response = client.post(f"/api/agents/{deployment}/chat", json={"message": text})
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()["assistant_message"]
    return reply


def test_a_crash_in_a_job_is_an_event_and_a_model_failure_only_a_breadcrumb(
    traced: Traced,
) -> None:
    with _client(traced, "sentry-worker@example.com") as (client, token, user_id):
        deployment = deploy(client, "code-review-buddy", {"openai_api_key": USER_KEY})

        # A model failure after its retries: an outcome, not an event.
        # (More 503s than attempts: a retried job's attempts draw on the same list.)
        gave_up = _send(
            client, deployment, f"retry me {uuid.uuid4()} [[fault:{','.join(['503'] * 12)}]]"
        )
        assert gave_up["status"] == "failed"

        crashed = _send(client, deployment, f"{FAULT_MARKER} my token is {token}, key {NEW_KEY}")
        assert crashed["status"] == "failed"
        assert crashed["error"]["code"] == "internal_error"

        event = traced.ingest.wait_for("event", lambda e: _process(e) == "worker")
        assert _exception_type(event) == "ForcedFault"
        tags = event["tags"]
        assert tags["message_id"] == crashed["id"]
        assert tags["conversation_id"] == crashed["conversation_id"]
        assert tags["deployment_id"] == deployment
        assert tags["agent"] == "code-review-buddy"
        assert tags["user_id"] == user_id
        assert tags["job_id"].isdigit()
        assert re.fullmatch(r"[0-9a-f]{32}", tags["trace_id"])
        crumbs = [c for c in event["breadcrumbs"]["values"] if c.get("category") == "model"]
        assert crumbs and crumbs[-1]["data"]["error_code"] == "upstream_unavailable", crumbs
        # The model failure before it sent no event: this is the worker's only one.
        worker_events = [e for e in traced.ingest.payloads("event") if _process(e) == "worker"]
        assert len(worker_events) == 1
        # The exception's text held the user's message (a JWT, a key) and the deployment's key.
        _no_secret(traced.ingest.raw(), token, USER_KEY, NEW_KEY, PLATFORM_KEY)


def test_a_traced_send_and_its_job_share_one_trace_with_their_spans(traced: Traced) -> None:
    with _client(traced, "sentry-trace@example.com") as (client, _, _):
        deployment = deploy(client, "sql-sidekick")
        with client.stream(
            "POST",
            f"/api/agents/{deployment}/chat",
            json={"message": f"trace me {uuid.uuid4()} [[ttft:50]]"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            request_id = response.headers["x-request-id"]
            events = list(sse_events(response))
        assert events[-1][1] == "message.completed"
        reply_id = events[-1][2]["message"]["id"]  # type: ignore[index]

        request = traced.ingest.wait_for(
            "transaction", lambda t: (t.get("tags") or {}).get("request_id") == request_id
        )
        job = traced.ingest.wait_for(
            "transaction", lambda t: (t.get("tags") or {}).get("message_id") == reply_id
        )
        assert request["transaction"] == "/api/agents/{deployment_id}/chat"
        assert job["transaction"] == "chat.reply"
        assert job["contexts"]["trace"]["op"] == "queue.process"
        # One trace: the job continues the request's, as a child of its transaction.
        assert job["contexts"]["trace"]["trace_id"] == request["contexts"]["trace"]["trace_id"]
        assert job["contexts"]["trace"]["parent_span_id"] == request["contexts"]["trace"]["span_id"]
        assert job["tags"]["trace_id"] == request["tags"]["trace_id"]

        request_spans = {(s["op"], s.get("description")) for s in request["spans"]}
        assert ("db", "chat_send_message") in request_spans
        assert ("db", "chat_message_by_id") in request_spans or (
            "db",
            "chat_stream_state",
        ) in request_spans, request_spans
        job_spans = {s["op"]: s for s in job["spans"]}
        assert {s.get("description") for s in job["spans"] if s["op"] == "db"} >= {
            "finish_chat_job"
        }
        relay = job_spans["stream.relay"]
        assert relay["data"]["chars"] > 0
        # The SDK sends gen_ai spans beside their transaction, as a batch of v2 spans.
        trace = job["contexts"]["trace"]["trace_id"]
        ai = {
            span["attributes"]["sentry.op"]["value"]: span
            for span in traced.ingest.v2_spans()
            if span["trace_id"] == trace
        }
        model = ai["gen_ai.chat"]
        attributes = {k: v["value"] for k, v in model["attributes"].items()}
        assert attributes["ttft_ms"] >= 0
        assert attributes["gen_ai.usage.output_tokens"] > 0
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
        # The relay's span holds the model call's, which holds its attempt.
        assert model["parent_span_id"] == relay["span_id"]
        attempt = ai["gen_ai.attempt"]
        assert attempt["attributes"]["outcome"]["value"] == "ok"
        assert attempt["parent_span_id"] == model["span_id"]
