"""The functions' signature over a validated config is exactly what the database verifies:
agentmarket.signing mirrors private.signed_deployment_payload, byte for byte, for awkward input."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from agentmarket.domain import signing

pytestmark = pytest.mark.db

CASES = [
    ({}, []),
    ({"tone": "dry", "n": 3}, []),
    ({"greeting": "Grüße, 世界 — 🎉", "csv": "a,b:c"}, ["openai_api_key"]),
    ({"x": "1:2,3"}, ["a, b", "ü:,", ""]),
]


@pytest.mark.parametrize(("config", "missing"), CASES)
def test_python_and_sql_sign_the_same_payload(
    conn: psycopg.Connection, config: dict[str, object], missing: list[str]
) -> None:
    user, target = uuid.uuid4(), uuid.uuid4()
    text = signing.config_text(config)
    row = conn.execute(
        "select private.signed_deployment_payload('update', %s, %s, %s, %s),"
        " private.deployment_signature_valid('update', %s, %s, %s, %s, %s),"
        " private.api_signing_key()",
        (
            user,
            target,
            text,
            missing,
            user,
            target,
            text,
            missing,
            signing.sign(KEY_PLACEHOLDER, "update", user, target, text, missing),
        ),
    ).fetchone()
    assert row is not None
    sql_payload, valid_with_wrong_key, key = row
    assert sql_payload == signing.payload("update", user, target, text, missing)
    assert valid_with_wrong_key is False
    good = signing.sign(bytes(key), "update", user, target, text, missing)
    ok = conn.execute(
        "select private.deployment_signature_valid('update', %s, %s, %s, %s, %s),"
        " private.deployment_signature_valid('create', %s, %s, %s, %s, %s)",
        (user, target, text, missing, good, user, target, text, missing, good),
    ).fetchone()
    assert ok == (True, False)


KEY_PLACEHOLDER = b"\x00" * 32
