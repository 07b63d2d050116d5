"""Log lines reach their stream whole: one write per line, newline included, so processes that
share a pipe (`worker --processes N`) never splice their lines together."""

from __future__ import annotations

import io
import json

import structlog

from agentmarket.core.logging import configure_logging
from agentmarket.core.redaction import scrub


class RecordingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_each_line_is_one_write_with_its_newline() -> None:
    stream = RecordingStream()
    configure_logging("info", json_logs=True, stream=stream)
    try:
        log = structlog.get_logger()
        log.info("first.event", worker_id="a")
        log.info("second.event", worker_id="b", api_key="sk-hidden")
    finally:
        configure_logging("info")
    assert len(stream.writes) == 2
    assert all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes)
    records = [json.loads(w) for w in stream.writes]
    assert [r["event"] for r in records] == ["first.event", "second.event"]
    assert records[1]["api_key"] == "[redacted]"


def test_lines_render_what_orjson_refuses_and_what_json_cannot_show() -> None:
    stream = RecordingStream()
    configure_logging("info", json_logs=True, stream=stream)
    try:
        log = structlog.get_logger()
        log.info("big.number", count=2**70, name="café", keyed={1: "one"})
        log.info("odd.value", value=object(), worker_token="t-123")
    finally:
        configure_logging("info")
    big, odd = (json.loads(w) for w in stream.writes)
    assert (big["count"], big["name"], big["keyed"]) == (2**70, "café", {"1": "one"})
    assert odd["value"].startswith("<object object at ")
    assert odd["worker_token"] == "[redacted]"


def test_secrets_inside_any_text_are_scrubbed_exceptions_included() -> None:
    key = "sk-live-0123456789abcdefABCDEF"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl"
    stream = RecordingStream()
    configure_logging("info", json_logs=True, stream=stream)
    try:
        log = structlog.get_logger()
        log.info(
            "upstream.said",
            detail=f"Incorrect API key provided: {key}",
            header=f"Authorization: Bearer {jwt}",
            url=f"https://example.test/?token={jwt}",
            note="sk-short and eyJ alone are not secrets",
        )
        try:
            raise ValueError(f"bad key {key} for bearer abcdefgh12345678")
        except ValueError:
            log.exception("failed")
    finally:
        configure_logging("info")
    text = "".join(stream.writes)
    assert key not in text and jwt not in text and "abcdefgh12345678" not in text
    first, second = (json.loads(w) for w in stream.writes)
    assert first["detail"] == "Incorrect API key provided: sk-[redacted]"
    assert first["header"] == "Authorization: Bearer [redacted]"
    assert first["url"] == "https://example.test/?token=[redacted-jwt]"
    assert first["note"] == "sk-short and eyJ alone are not secrets"
    assert "ValueError: bad key sk-[redacted] for bearer [redacted]" in second["exception"]


def test_a_bearer_credential_is_scrubbed_whatever_its_case() -> None:
    for word in ("Bearer", "bearer", "BEARER"):
        scrubbed = scrub(f"Authorization: {word} abcdefgh12345678")
        assert scrubbed == f"Authorization: {word} [redacted]"
