"""Structured logs: structlog with JSON lines (or a console renderer in a terminal) and
contextvars, so request_id / user_id / deployment_id / job_id bound once appear on every line, and
secrets are redacted by key, and scrubbed from any text, whatever logged them."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from agentmarket.core.redaction import REDACTED_KEYS, is_secret_key, scrub

__all__ = ["REDACTED_KEYS", "configure_logging"]


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Values under secret-like keys go whole; keys, JWTs and bearer credentials inside any other
    text (a message, a URL, the formatted exception) are scrubbed (agentmarket.core.redaction)."""
    for key, value in event_dict.items():
        if is_secret_key(key):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str):
            event_dict[key] = scrub(value)
    return event_dict


def _dumps(event_dict: Any, *, default: Callable[[Any], Any]) -> str:
    """The line's JSON: orjson (a fraction of json.dumps's cost, which every request's log line
    pays), or json.dumps for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(event_dict, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event_dict, default=default)


def configure_logging(
    level: str = "info", *, json_logs: bool | None = None, stream: TextIO | None = None
) -> None:
    """Idempotent; JSON unless stderr is a terminal (or `json_logs` says otherwise). Lines go to
    `stream` (default stderr)."""
    use_json = not sys.stderr.isatty() if json_logs is None else json_logs
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if use_json
        else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # After the exception is formatted, so its text is scrubbed too.
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        # One write per line (print() writes the line and its newline apart): worker processes
        # share one stderr pipe, and a pipe keeps each write under PIPE_BUF whole.
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
