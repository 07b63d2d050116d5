"""Secrets: the one set of rules for every log line (agentmarket.core.logging) and every Sentry
event (agentmarket.core.sentry). Values under keys named like secrets (`is_secret_key`) are
redacted whole; `scrub` catches a secret quoted inside free text: a message, a URL, a traceback."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

__all__ = ["REDACTED_KEYS", "is_secret_key", "scrub"]

# Keys whose values never reach a log line or an event, whatever put them there.
REDACTED_KEYS: Final = frozenset(
    {"authorization", "token", "access_token", "password", "api_key", "openai_api_key", "secret"}
)
_REDACTED_SUFFIXES: Final = ("_token", "_secret", "_key")


@lru_cache(maxsize=4096)  # the same few keys, again and again (bounded: header names vary)
def is_secret_key(key: str) -> bool:
    """Whether a value under `key` is a secret as a whole (`api_key`, `webhook_token`, …)."""
    lowered = key.lower()
    return lowered in REDACTED_KEYS or lowered.endswith(_REDACTED_SUFFIXES)


# An OpenAI-style key, a JWT (header.payload.signature, base64url), a bearer credential.
_SECRET: Final = re.compile(
    r"\bsk-[A-Za-z0-9_-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)


def _replacement(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("sk-"):
        return "sk-[redacted]"
    if text.startswith("eyJ"):
        return "[redacted-jwt]"
    return text.split(None, 1)[0] + " [redacted]"


def scrub(text: str) -> str:
    """`text` with every API key, JWT and bearer credential in it replaced."""
    # Cheap tests first: most text holds none of these, and every log line passes here.
    if "sk-" not in text and "eyJ" not in text and "earer" not in text and "EARER" not in text:
        return text
    return _SECRET.sub(_replacement, text)
