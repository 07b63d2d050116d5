"""Deployment secrets at rest: AES-256-GCM with rotatable keys (the keys and their rotation:
docs/operations.md#checking-the-environment; what callers see: docs/api.md#the-deployment-object).

A sealed secret is `(key_id, nonce || ciphertext+tag)`. The first key of `SECRETS_ENCRYPTION_KEY`
seals; every listed key opens, so a new key can be put first while rows sealed with the old one are
re-sealed at leisure (`needs_rotation` / `reseal`). The associated data (`secret_aad`) binds a
ciphertext to its deployment and field, so a row copied onto another deployment or field does not
open. Nothing here logs, and no exception carries plaintext.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agentmarket.core.config import EncryptionKey

__all__ = [
    "KNOWN_PREFIXES",
    "NONCE_BYTES",
    "SealedSecret",
    "SecretBox",
    "SecretDecryptError",
    "mask",
    "secret_aad",
]

NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32

# Recognisable key prefixes kept by `mask`, longest first so "sk-proj-" wins over "sk-".
KNOWN_PREFIXES = ("sk-svcacct-", "sk-admin-", "sk-proj-", "sk-ant-", "sk-", "rk-")
ELLIPSIS = "…"
HIDDEN = "••••"


class SecretDecryptError(Exception):
    """A sealed secret could not be opened: unknown key id, tampered ciphertext or wrong AAD.

    Deliberately not an `AppError`: it is a server-side fault (lost key, corrupted row), never the
    caller's, and must not be turned into a client-facing message by accident.
    """


@dataclass(frozen=True)
class SealedSecret:
    key_id: str
    ciphertext: bytes = dataclasses.field(
        repr=False
    )  # 12-byte random nonce || AES-GCM ciphertext + tag
    hint: str  # masked form for display, see `mask`


class SecretBox:
    """Seals with the first key, opens with any of them."""

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        ciphers: dict[str, AESGCM] = {}
        for key in keys:
            if len(key.key) != KEY_BYTES:
                raise ValueError(f"key {key.key_id!r} must be {KEY_BYTES} bytes (AES-256)")
            if key.key_id in ciphers:
                raise ValueError(f"duplicate key id {key.key_id!r}")
            ciphers[key.key_id] = AESGCM(key.key)
        self._ciphers = ciphers
        self._current = keys[0].key_id

    def __repr__(self) -> str:
        return f"SecretBox(current={self._current!r}, key_ids={list(self._ciphers)!r})"

    @property
    def current_key_id(self) -> str:
        return self._current

    def seal(self, plaintext: str, *, aad: bytes) -> SealedSecret:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, plaintext.encode("utf-8"), aad)
        return SealedSecret(key_id=self._current, ciphertext=nonce + sealed, hint=mask(plaintext))

    def open(self, key_id: str, ciphertext: bytes, *, aad: bytes) -> str:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SecretDecryptError(f"unknown encryption key id {key_id!r}")
        if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
            raise SecretDecryptError("sealed secret is truncated")
        nonce, body = ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:]
        try:
            plaintext = cipher.decrypt(nonce, body, aad)
        except InvalidTag:
            raise SecretDecryptError(
                "sealed secret failed authentication (tampered, or bound to another row)"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - authenticated data we sealed ourselves
            raise SecretDecryptError("sealed secret is not UTF-8") from None

    def needs_rotation(self, key_id: str) -> bool:
        """True when a secret sealed with `key_id` should be re-sealed with the current key."""
        return key_id != self._current

    def reseal(self, key_id: str, ciphertext: bytes, *, aad: bytes) -> SealedSecret:
        """Open with whichever key sealed it and seal again with the current key (rotation)."""
        return self.seal(self.open(key_id, ciphertext, aad=aad), aad=aad)


def secret_aad(deployment_id: uuid.UUID, field: str) -> bytes:
    """Associated data binding a ciphertext to one deployment's field.

    The UUID's canonical form has no ':', so the encoding is unambiguous whatever the field name.
    """
    return f"agentmarket:deployment-secret:v1:{deployment_id}:{field}".encode()


def mask(value: str) -> str:
    """A display hint that identifies a secret without revealing it, e.g. "sk-proj-…Ab12".

    Keeps a known, recognisable prefix ("sk-", "sk-proj-", …) and at most the last 4 characters of
    the rest (the body). The shorter, the less is shown: a value under 12 characters gives "…" and
    its last 2 (under 8: just "••••"); a body under 12 characters shows only its last 2 (under 8:
    none). The result is at most 16 characters (the longest prefix + "…" + 4).
    """
    if len(value) < 12:
        return ELLIPSIS + value[-2:] if len(value) >= 8 else HIDDEN
    prefix = next((p for p in KNOWN_PREFIXES if value.startswith(p)), "")
    body = value[len(prefix) :]
    if len(body) >= 12:
        tail = body[-4:]
    elif len(body) >= 8:
        tail = body[-2:]
    else:
        return prefix + HIDDEN
    return prefix + ELLIPSIS + tail
