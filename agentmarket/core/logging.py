"""Structured logs: structlog with JSON lines (or a console renderer in a terminal) and
contextvars, so request_id / user_id / deployment_id / job_id bound once appear on every line, and
secrets are redacted by key whatever logged them."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["REDACTED_KEYS", "configure_logging"]

# Keys whose values never reach a log line, whatever logged them.
REDACTED_KEYS = frozenset(
    {"authorization", "token", "access_token", "password", "api_key", "openai_api_key", "secret"}
)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in REDACTED_KEYS or key.lower().endswith(("_token", "_secret", "_key")):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(
    level: str = "info", *, json_logs: bool | None = None, stream: TextIO | None = None
) -> None:
    """Idempotent; JSON unless stderr is a terminal (or `json_logs` says otherwise). Lines go to
    `stream` (default stderr)."""
    use_json = not sys.stderr.isatty() if json_logs is None else json_logs
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
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
