from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmarket.core.config import EncryptionKey, get_settings
from agentmarket.core.errors import AppError
from agentmarket.domain.secrets import (
    KNOWN_PREFIXES,
    NONCE_BYTES,
    SealedSecret,
    SecretBox,
    SecretDecryptError,
    mask,
    secret_aad,
)

OLD = EncryptionKey("old", bytes(range(32)))
NEW = EncryptionKey("new", bytes(range(32, 64)))
DEPLOYMENT = uuid.UUID("0b6f6c1e-8d0a-4d55-9d8e-1f3a2b4c5d6e")
AAD = secret_aad(DEPLOYMENT, "openai_api_key")
API_KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2 + "wxyz"


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_round_trip() -> None:
    box = SecretBox([NEW])
    sealed = box.seal(API_KEY, aad=AAD)
    assert isinstance(sealed, SealedSecret)
    assert sealed.key_id == "new"
    assert API_KEY.encode() not in sealed.ciphertext
    assert sealed.hint == mask(API_KEY) == "sk-proj-…wxyz"
    assert box.open(sealed.key_id, sealed.ciphertext, aad=AAD) == API_KEY


@pytest.mark.parametrize("plaintext", ["", "x", "pässwörd ✓ 🔑", "t" * 10_000])
def test_round_trip_any_text(plaintext: str) -> None:
    box = SecretBox([NEW])
    sealed = box.seal(plaintext, aad=AAD)
    assert box.open(sealed.key_id, sealed.ciphertext, aad=AAD) == plaintext


def test_works_with_keys_from_settings() -> None:
    encoded = base64.b64encode(NEW.key).decode()
    keys = get_settings(secrets_encryption_key=f"k1:{encoded}").encryption_keys
    box = SecretBox(keys)
    sealed = box.seal("hello", aad=AAD)
    assert sealed.key_id == "k1"
    assert box.open("k1", sealed.ciphertext, aad=AAD) == "hello"


def test_nonce_is_random() -> None:
    box = SecretBox([NEW])
    first = box.seal(API_KEY, aad=AAD)
    second = box.seal(API_KEY, aad=AAD)
    assert first.ciphertext != second.ciphertext
    assert first.ciphertext[:NONCE_BYTES] != second.ciphertext[:NONCE_BYTES]
    assert box.open("new", first.ciphertext, aad=AAD) == box.open("new", second.ciphertext, aad=AAD)


@pytest.mark.parametrize("where", ["nonce", "body", "tag"])
def test_tampering_is_detected(where: str) -> None:
    box = SecretBox([NEW])
    ciphertext = box.seal(API_KEY, aad=AAD).ciphertext
    index = {"nonce": 0, "body": NONCE_BYTES + 1, "tag": len(ciphertext) - 1}[where]
    with pytest.raises(SecretDecryptError):
        box.open("new", flip(ciphertext, index), aad=AAD)


@pytest.mark.parametrize("ciphertext", [b"", b"\x00" * NONCE_BYTES, b"\x00" * 27])
def test_truncated_ciphertext_is_refused(ciphertext: bytes) -> None:
    with pytest.raises(SecretDecryptError):
        SecretBox([NEW]).open("new", ciphertext, aad=AAD)


@pytest.mark.parametrize(
    "other_aad",
    [
        secret_aad(uuid.UUID("11111111-2222-4333-8444-555555555555"), "openai_api_key"),
        secret_aad(DEPLOYMENT, "webhook_token"),
        b"",
    ],
)
def test_wrong_aad_is_refused(other_aad: bytes) -> None:
    box = SecretBox([NEW])
    sealed = box.seal(API_KEY, aad=AAD)
    with pytest.raises(SecretDecryptError) as excinfo:
        box.open(sealed.key_id, sealed.ciphertext, aad=other_aad)
    assert API_KEY not in str(excinfo.value)


def test_aad_distinguishes_rows() -> None:
    other = uuid.UUID("11111111-2222-4333-8444-555555555555")
    aads = {
        secret_aad(DEPLOYMENT, "openai_api_key"),
        secret_aad(DEPLOYMENT, "webhook_token"),
        secret_aad(other, "openai_api_key"),
        secret_aad(other, "webhook_token"),
    }
    assert len(aads) == 4
    assert secret_aad(DEPLOYMENT, "openai_api_key") == AAD


def test_rotation_old_key_still_opens() -> None:
    sealed = SecretBox([OLD]).seal(API_KEY, aad=AAD)
    rotated = SecretBox([NEW, OLD])
    assert rotated.current_key_id == "new"
    assert rotated.open(sealed.key_id, sealed.ciphertext, aad=AAD) == API_KEY
    assert rotated.needs_rotation("old") is True
    assert rotated.needs_rotation("new") is False

    resealed = rotated.reseal(sealed.key_id, sealed.ciphertext, aad=AAD)
    assert resealed.key_id == "new"
    assert not rotated.needs_rotation(resealed.key_id)
    assert SecretBox([NEW]).open("new", resealed.ciphertext, aad=AAD) == API_KEY


def test_unknown_key_id_is_refused() -> None:
    sealed = SecretBox([OLD]).seal(API_KEY, aad=AAD)
    box = SecretBox([NEW])
    with pytest.raises(SecretDecryptError, match="unknown encryption key id"):
        box.open(sealed.key_id, sealed.ciphertext, aad=AAD)
    with pytest.raises(SecretDecryptError):
        box.open("", sealed.ciphertext, aad=AAD)


def test_a_key_with_the_same_id_but_other_bytes_does_not_open() -> None:
    sealed = SecretBox([OLD]).seal(API_KEY, aad=AAD)
    impostor = SecretBox([EncryptionKey("old", NEW.key)])
    with pytest.raises(SecretDecryptError):
        impostor.open("old", sealed.ciphertext, aad=AAD)


def test_decrypt_error_is_not_an_app_error() -> None:
    assert not issubclass(SecretDecryptError, AppError)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ([], "at least one"),
        ([EncryptionKey("short", b"\x00" * 16)], "32 bytes"),
        ([NEW, EncryptionKey("new", OLD.key)], "duplicate"),
    ],
)
def test_bad_keys_are_refused(keys: list[EncryptionKey], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SecretBox(keys)


def test_reprs_reveal_no_key_or_ciphertext() -> None:
    box = SecretBox([NEW, OLD])
    sealed = box.seal(API_KEY, aad=AAD)
    assert "new" in repr(box)
    assert repr(NEW.key) not in repr(box)
    assert repr(sealed.ciphertext) not in repr(sealed)
    assert API_KEY not in repr(sealed)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD", "sk-proj-…ABCD"),
        ("sk-abcdefghij_klmnopqrstuvwxyz0123456789abcdefghWXYZ", "sk-…WXYZ"),
        ("sk-svcacct-abcdefghijklmnopqrstuvwx1234", "sk-svcacct-…1234"),
        ("sk-abcdefghij", "sk-…ij"),  # short body: last 2 only
        ("sk-proj-abcd", "sk-proj-••••"),  # tiny body: nothing
        ("sk-abcdefg", "…fg"),  # under 12 characters: no prefix
        ("abcdefghij", "…ij"),
        ("abcdefgh", "…gh"),
        ("abcdefg", "••••"),
        ("short", "••••"),
        ("", "••••"),
        ("ghp_abcdefghijklmnopqrstuvwxyz123456", "…3456"),  # unknown prefix: dropped
        ("xoxb-1234567890-abcdefghij", "…ghij"),
        ("Bearer-token-that-is-long-enough", "…ough"),
        ("x" * 500 + "tail", "…tail"),
    ],
)
def test_mask_examples(value: str, masked: str) -> None:
    assert mask(value) == masked


@settings(database=None, max_examples=300)
@given(
    prefix=st.sampled_from(["", *KNOWN_PREFIXES, "sk", "proj-", "sk-proj"]),
    body=st.text(max_size=80),
)
def test_mask_reveals_at_most_the_last_four_characters(prefix: str, body: str) -> None:
    value = prefix + body
    masked = mask(value)
    assert len(masked) <= 32
    kept_prefix = next((p for p in KNOWN_PREFIXES if value.startswith(p)), "")
    shown_prefix = kept_prefix if masked.startswith(kept_prefix) and len(value) >= 12 else ""
    rest = masked[len(shown_prefix) :]
    if rest == "••••":
        return
    assert rest.startswith("…")
    tail = rest[1:]
    assert len(tail) <= 4
    assert value.endswith(tail)
    assert len(tail) <= len(value[len(shown_prefix) :]) // 2
