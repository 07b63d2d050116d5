from __future__ import annotations

import base64
import os
import uuid

import psycopg
import pytest

from agentmarket.cli import main
from agentmarket.core.config import parse_encryption_keys
from agentmarket.domain.secrets import SecretBox, secret_aad
from agentmarket.ops.rotation import rotate_secrets
from agentmarket.ops.tokens import ensure_user

pytestmark = pytest.mark.db

OLD = "old:" + base64.b64encode(os.urandom(32)).decode()
NEW = "new:" + base64.b64encode(os.urandom(32)).decode()
LOST = "lost:" + base64.b64encode(os.urandom(32)).decode()


def store(conn: psycopg.Connection, box: SecretBox, count: int) -> list[tuple[uuid.UUID, str]]:
    user = ensure_user(conn, email=f"{uuid.uuid4().hex[:8]}@example.com")
    agent = conn.execute("select id from public.marketplace_agents limit 1").fetchone()
    assert agent is not None
    stored = []
    for i in range(count):
        row = conn.execute(
            "insert into public.agent_deployments (user_id, agent_id, name) values (%s, %s, %s)"
            " returning id",
            (user.id, agent[0], f"d{i}"),
        ).fetchone()
        assert row is not None
        sealed = box.seal(f"sk-secret-value-{i}", aad=secret_aad(row[0], "openai_api_key"))
        conn.execute(
            "insert into private.deployment_secrets"
            " (deployment_id, field, key_id, ciphertext, hint)"
            " values (%s, 'openai_api_key', %s, %s, %s)",
            (row[0], sealed.key_id, sealed.ciphertext, sealed.hint),
        )
        stored.append((row[0], f"sk-secret-value-{i}"))
    return stored


def test_rotation_reseals_every_old_secret_and_keeps_its_value(conn: psycopg.Connection) -> None:
    stored = store(conn, SecretBox(parse_encryption_keys(OLD)), 5)
    box = SecretBox(parse_encryption_keys(f"{NEW},{OLD}"))
    assert rotate_secrets(conn, box, batch=2, dry_run=True).rotated == 5
    assert conn.execute(
        "select count(*) from private.deployment_secrets where key_id = 'old'"
    ).fetchone() == (5,)

    result = rotate_secrets(conn, box, batch=2)
    assert (result.rotated, result.unreadable) == (5, [])
    new_only = SecretBox(parse_encryption_keys(NEW))
    for deployment_id, value in stored:
        key_id, ciphertext = conn.execute(
            "select key_id, ciphertext from private.deployment_secrets where deployment_id = %s",
            (deployment_id,),
        ).fetchone()  # type: ignore[misc]
        assert key_id == "new"
        assert (
            new_only.open(
                key_id, bytes(ciphertext), aad=secret_aad(deployment_id, "openai_api_key")
            )
            == value
        )
    assert rotate_secrets(conn, box).rotated == 0  # nothing left


def test_secrets_under_a_dropped_key_are_reported_not_lost(
    conn: psycopg.Connection,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store(conn, SecretBox(parse_encryption_keys(LOST)), 1)
    store(conn, SecretBox(parse_encryption_keys(OLD)), 2)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEY", f"{NEW},{OLD}")
    assert main(["rotate-secrets"]) == 1
    out = capsys.readouterr().out
    assert "re-encrypted 2 secret(s) with key 'new'" in out
    assert "unreadable: deployment" in out
    assert conn.execute(
        "select count(*) from private.deployment_secrets where key_id = 'lost'"
    ).fetchone() == (1,)
