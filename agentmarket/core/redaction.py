"""Secrets in free text: the patterns scrubbed from every log line (agentmarket.core.logging),
whatever field or exception text they appear in. Keys named like secrets are redacted whole
there; these catch a secret quoted inside a message, a URL or a traceback."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["scrub"]

# An OpenAI-style key, a JWT (header.payload.signature, base64url), a bearer credential.
_SECRET: Final = re.compile(
    r"\bsk-[A-Za-z0-9_-]{8,}"
    r"|\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)
# Cheap tests first: most text holds none of these, and every log line passes here.
_MARKERS: Final = ("sk-", "eyJ", "earer")


def _replacement(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("sk-"):
        return "sk-[redacted]"
    if text.startswith("eyJ"):
        return "[redacted-jwt]"
    return text.split(None, 1)[0] + " [redacted]"


def scrub(text: str) -> str:
    """`text` with every API key, JWT and bearer credential in it replaced."""
    if not any(marker in text for marker in _MARKERS):
        return text
    return _SECRET.sub(_replacement, text)
