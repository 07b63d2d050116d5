from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from agentmarket.cli import main
from agentmarket.config import (
    DEV_DATABASE_URL,
    AppEnv,
    check_env,
    get_settings,
    parse_encryption_keys,
)

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(32, 64))).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """Settings come from the test's environment only (no .env, no developer variables)."""
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    for name in (
        "APP_ENV",
        "DATABASE_URL",
        "DATABASE_DIRECT_URL",
        "SUPABASE_URL",
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_JWT_SECRET",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "SECRETS_ENCRYPTION_KEY",
        "SENTRY_DSN",
    ):
        monkeypatch.delenv(name, raising=False)


def test_encryption_keys_parse_with_the_first_one_encrypting() -> None:
    keys = parse_encryption_keys(f"new:{KEY_B}, old:{KEY_A}")
    assert [k.key_id for k in keys] == ["new", "old"]
    assert keys[0].key == bytes(range(32, 64))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "at least one key"),
        ("nokeyid", "KEYID:BASE64"),
        ("k:not base64!", "not valid base64"),
        (f"k:{base64.b64encode(b'short').decode()}", "must decode to 32 bytes"),
        (f"k:{KEY_A},k:{KEY_B}", "unique"),
    ],
)
def test_bad_encryption_keys_are_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_encryption_keys(value)


def test_settings_refuse_an_invalid_encryption_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEY", "k:short")
    with pytest.raises(ValidationError):
        get_settings()


def test_placeholders_are_refused_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "change-me")
    assert get_settings().openai_api_key is not None  # dev tolerates it (check-env reports it)
    monkeypatch.setenv("APP_ENV", "test")
    with pytest.raises(ValidationError, match="OPENAI_API_KEY is a placeholder"):
        get_settings()


def test_secrets_do_not_leak_through_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-abcdefghijklmnopqrstuvwxyz")
    settings = get_settings()
    assert "abcdefghij" not in repr(settings)
    assert "postgres:postgres" not in repr(settings)


def test_direct_url_defaults_to_database_url_and_issuer_follows_supabase_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = get_settings()
    assert settings.direct_database_url == DEV_DATABASE_URL
    assert settings.jwt_issuer is None
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgresql://u:p@db:5432/postgres")
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co/")
    settings = get_settings()
    assert settings.direct_database_url == "postgresql://u:p@db:5432/postgres"
    assert settings.jwt_issuer == "https://abc.supabase.co/auth/v1"


def test_check_env_is_quiet_in_dev_and_strict_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not [p for p in check_env(get_settings()) if p.required]
    prod = get_settings(app_env=AppEnv.PROD)
    required = {p.setting for p in check_env(prod) if p.required}
    assert required == {
        "DATABASE_URL",
        "SUPABASE_JWT_SECRET",
        "SECRETS_ENCRYPTION_KEY",
        "SUPABASE_URL",
        "OPENAI_API_KEY",
    }


def test_check_env_command_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-env"]) == 0
    monkeypatch.setenv("APP_ENV", "prod")
    assert main(["check-env"]) == 1
    out = capsys.readouterr().out
    assert "missing  SECRETS_ENCRYPTION_KEY" in out
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:pw@db.example.com:5432/postgres")
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "q8Vd2LmT0rWc5Nz1Hs7Kp4Yb9Xe3Ga6Fj0Ru2Ot8")
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEY", f"k1:{KEY_A}")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-abcdefghijklmnopqrstuvwx")
    assert main(["check-env"]) == 0
    out = capsys.readouterr().out
    assert "pw@" not in out and "abcdefghij" not in out


def test_check_env_reports_invalid_settings_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RATE_LIMIT_CHAT_PER_MINUTE", "zero")
    with pytest.raises(SystemExit) as exc:
        main(["check-env"])
    assert exc.value.code == 2
    assert "RATE_LIMIT_CHAT_PER_MINUTE" in capsys.readouterr().err


def test_env_example_documents_every_setting_and_parses() -> None:
    from agentmarket import paths
    from agentmarket.config import Settings

    example = paths.project_root() / ".env.example"
    names = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names == {name.upper() for name in Settings.model_fields}
    settings = Settings(_env_file=example)  # type: ignore[call-arg]
    assert settings.app_env is AppEnv.DEV
    assert not [p for p in check_env(settings) if p.required]


def test_allow_http_urls_is_off_by_default_and_noted_in_prod() -> None:
    assert get_settings().allow_http_urls is False
    assert [
        p for p in check_env(get_settings(app_env="prod")) if p.setting == "ALLOW_HTTP_URLS"
    ] == []
    prod = get_settings(app_env="prod", allow_http_urls=True)
    [problem] = [p for p in check_env(prod) if p.setting == "ALLOW_HTTP_URLS"]
    assert not problem.required
