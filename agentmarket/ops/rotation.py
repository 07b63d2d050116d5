"""Re-encrypting stored deployment secrets with the current key (key rotation).

Put the new key first in SECRETS_ENCRYPTION_KEY (keep the old ones after it), deploy, then run
`agentmarket rotate-secrets`: every secret sealed with an older key is opened and sealed again with
the current one, in batches of short transactions. When it reports nothing left, the old keys can
be removed from the setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from agentmarket.domain.secrets import SecretBox, SecretDecryptError, secret_aad

__all__ = ["RotationResult", "rotate_secrets"]

PENDING = """
select deployment_id, field
  from private.deployment_secrets
 where key_id <> %s and (deployment_id, field) > (%s, %s)
 order by deployment_id, field
 limit %s
"""
LOCK_ONE = """
select key_id, ciphertext from private.deployment_secrets
 where deployment_id = %s and field = %s and key_id <> %s
   for update
"""
REPLACE = """
update private.deployment_secrets set key_id = %s, ciphertext = %s
 where deployment_id = %s and field = %s
"""
_START = ("00000000-0000-0000-0000-000000000000", "")


@dataclass(frozen=True)
class RotationResult:
    rotated: int
    unreadable: list[tuple[str, str]]  # (deployment_id, field) sealed with a key no longer listed


def rotate_secrets(
    conn: psycopg.Connection, box: SecretBox, *, batch: int = 200, dry_run: bool = False
) -> RotationResult:
    rotated = 0
    unreadable: list[tuple[str, str]] = []
    after = _START
    while True:
        rows = conn.execute(PENDING, (box.current_key_id, *after, batch)).fetchall()
        if not rows:
            return RotationResult(rotated, unreadable)
        with conn.transaction():
            for deployment_id, field in rows:
                current = conn.execute(
                    LOCK_ONE, (deployment_id, field, box.current_key_id)
                ).fetchone()
                if current is None:
                    continue  # changed meanwhile (re-saved with the current key, or deleted)
                key_id, ciphertext = current
                try:
                    sealed = box.reseal(
                        key_id, bytes(ciphertext), aad=secret_aad(deployment_id, field)
                    )
                except SecretDecryptError:
                    unreadable.append((str(deployment_id), field))
                    continue
                if not dry_run:
                    conn.execute(REPLACE, (sealed.key_id, sealed.ciphertext, deployment_id, field))
                rotated += 1
        after = (str(rows[-1][0]), rows[-1][1])
