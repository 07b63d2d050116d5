"""Structured logs and product events.

`configure_logging` sets up structlog (JSON lines, or a console renderer in a terminal) with
contextvars, so request_id / user_id / deployment_id bound once appear on every line. `track`
records a product event (`marketplace.agent.viewed`, …) both as a log line and as a row in
private.telemetry_events, inside the caller's transaction.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import MutableMapping
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb

EVENTS = frozenset(
    {
        "marketplace.agent.viewed",
        "marketplace.search.performed",
        "marketplace.agent.deployed",
        "agent.chat.message.sent",
        "agent.chat.response.received",
        "agent.chat.error",
    }
)

# Keys whose values never reach a log line, whatever logged them.
REDACTED_KEYS = frozenset(
    {"authorization", "token", "access_token", "password", "api_key", "openai_api_key", "secret"}
)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in REDACTED_KEYS or key.lower().endswith(("_token", "_secret", "_key")):
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(level: str = "info", *, json_logs: bool | None = None) -> None:
    """Idempotent; JSON unless stderr is a terminal (or `json_logs` says otherwise)."""
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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


log = structlog.get_logger("agentmarket")


async def track(
    conn: psycopg.AsyncConnection,
    name: str,
    *,
    agent_id: uuid.UUID | None = None,
    deployment_id: uuid.UUID | None = None,
    **properties: Any,
) -> None:
    """Record a product event: a log line now, a telemetry row when the transaction commits."""
    if name not in EVENTS:
        raise ValueError(f"unknown telemetry event {name!r}")
    log.info(
        name,
        agent_id=str(agent_id) if agent_id else None,
        deployment_id=str(deployment_id) if deployment_id else None,
        **properties,
    )
    await conn.execute(
        "select private.track_event(%s, %s, %s, %s)",
        (name, agent_id, deployment_id, Jsonb(properties)),
    )
