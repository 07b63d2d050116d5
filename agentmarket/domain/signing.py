"""Signed deployment configurations.

The deployment functions in the database (`private.create_deployment` / `update_deployment`,
SECURITY DEFINER, executable by `authenticated`) must not take a caller's word that a config was
validated. The functions app validates it against the agent's JSON Schema, then signs exactly what
it validated with HMAC-SHA256 under a key generated in the database (`private.api_signing_key`,
readable only by the API login `agentmarket_api` through `private.api_signing_key()`): the
operation, the caller's user id, the agent id (create) or deployment id (update), the required
fields still missing, and the config text it sends. The database recomputes the HMAC, refuses a
mismatch, and derives the status (configuring / active) from the signed missing list itself.

`payload` mirrors `private.signed_deployment_payload` (supabase/migrations/
20261130090100_trusted_deployment_writes.sql): netstrings (`<length>:<text>,`), so no field can
run into the next. Lengths count characters, as Postgres' length() does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.errors import DatabaseUnavailable

__all__ = [
    "VERSION",
    "DeploymentSigner",
    "Operation",
    "config_text",
    "netstring",
    "payload",
    "sign",
]

VERSION = "agentmarket.deployment.v1"
KEY_QUERY = "select private.api_signing_key()"

Operation = Literal["create", "update"]


def netstring(parts: Sequence[str]) -> str:
    return "".join(f"{len(part)}:{part}," for part in parts)


def payload(
    operation: Operation,
    user_id: uuid.UUID,
    target_id: uuid.UUID,
    config_text: str,
    missing: Sequence[str],
) -> str:
    return netstring(
        [VERSION, operation, str(user_id), str(target_id), netstring(missing), config_text]
    )


def sign(
    key: bytes,
    operation: Operation,
    user_id: uuid.UUID,
    target_id: uuid.UUID,
    config_text: str,
    missing: Sequence[str],
) -> bytes:
    message = payload(operation, user_id, target_id, config_text, missing).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()


def config_text(config: dict[str, Any]) -> str:
    """The exact text sent (and signed) for a validated config."""
    return json.dumps(config, separators=(",", ":"), sort_keys=True)


class DeploymentSigner:
    """Signs validated configs with the database's key, read once over the API login's pool
    (outside any caller's transaction: anon and authenticated may not read it)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def key(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._fetch()
        return self._key

    async def warm(self) -> None:
        """Read the key ahead of the first deploy (at startup); a failure is retried on use."""
        with contextlib.suppress(Exception):
            await self.key()

    async def _fetch(self) -> bytes:
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(KEY_QUERY)
                row = await cur.fetchone()
        except (psycopg.OperationalError, TimeoutError) as exc:
            raise DatabaseUnavailable() from exc
        if row is None or row[0] is None:
            raise RuntimeError("private.api_signing_key is empty: run agentmarket migrate")
        return bytes(row[0])

    async def sign(
        self,
        operation: Operation,
        user_id: uuid.UUID,
        target_id: uuid.UUID,
        config_text: str,
        missing: Sequence[str],
    ) -> bytes:
        return sign(await self.key(), operation, user_id, target_id, config_text, missing)
