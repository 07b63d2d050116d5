from __future__ import annotations

import base64

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr, ValidationError

from agentmarket.cli import main
from agentmarket.core.config import (
    DEV_DATABASE_URL,
    LOCAL_LOGIN_PASSWORDS,
    AppEnv,
    MissingSetting,
    Settings,
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
        "API_DATABASE_URL",
        "API_DATABASE_DIRECT_URL",
        "WORKER_DATABASE_URL",
        "MAX_ACTIVE_DEPLOYMENTS",
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
        "API_DATABASE_URL",
        "WORKER_DATABASE_URL",
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
    assert main(["check-env"]) == 1
    out = capsys.readouterr().out
    assert "missing  API_DATABASE_URL" in out and "missing  WORKER_DATABASE_URL" in out
    monkeypatch.setenv(
        "API_DATABASE_URL", "postgresql://agentmarket_api:apw@db.example.com/postgres"
    )
    monkeypatch.setenv("WORKER_DATABASE_URL", "postgresql://agentmarket_worker:wpw@db/postgres")
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
    from agentmarket.core import paths
    from agentmarket.core.config import Settings

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


def test_process_logins_default_to_the_local_logins_in_dev_and_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "DATABASE_URL", "postgresql://postgres:secret@127.0.0.1:6000/app?sslmode=disable"
    )
    for env in ("dev", "test"):
        monkeypatch.setenv("APP_ENV", env)
        settings = get_settings()
        api, listen, worker = (
            conninfo_to_dict(url)
            for url in (settings.api_url, settings.api_direct_url, settings.worker_url)
        )
        for params, login in (
            (api, "agentmarket_api"),
            (listen, "agentmarket_api"),
            (worker, "agentmarket_worker"),
        ):
            assert params["user"] == login
            assert params["password"] == LOCAL_LOGIN_PASSWORDS[login]
            assert (params["host"], params["port"], params["dbname"]) == (
                "127.0.0.1",
                "6000",
                "app",
            )
            assert params["sslmode"] == "disable"
    # The worker and the LISTEN connection follow the operator's session URL.
    monkeypatch.setenv("DATABASE_DIRECT_URL", "postgresql://postgres:secret@direct:5432/app")
    settings = get_settings()
    assert conninfo_to_dict(settings.worker_url)["host"] == "direct"
    assert conninfo_to_dict(settings.api_direct_url)["host"] == "direct"
    assert conninfo_to_dict(settings.api_url)["host"] == "127.0.0.1"


def test_explicit_process_logins_win_and_the_listen_url_follows_the_api_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_DATABASE_URL", "postgresql://agentmarket_api:a@pooler:6543/postgres")
    monkeypatch.setenv("WORKER_DATABASE_URL", "postgresql://agentmarket_worker:w@db:5432/postgres")
    settings = get_settings()
    assert settings.api_url == "postgresql://agentmarket_api:a@pooler:6543/postgres"
    assert settings.api_direct_url == settings.api_url
    assert settings.worker_url == "postgresql://agentmarket_worker:w@db:5432/postgres"
    monkeypatch.setenv("API_DATABASE_DIRECT_URL", "postgresql://agentmarket_api:a@db:5432/postgres")
    assert get_settings().api_direct_url == "postgresql://agentmarket_api:a@db:5432/postgres"


def test_prod_requires_the_process_logins(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = get_settings(app_env=AppEnv.PROD)
    with pytest.raises(MissingSetting, match="API_DATABASE_URL is required"):
        _ = settings.api_url
    with pytest.raises(MissingSetting, match="API_DATABASE_URL is required"):
        _ = settings.api_direct_url
    with pytest.raises(MissingSetting, match="WORKER_DATABASE_URL is required"):
        _ = settings.worker_url
    monkeypatch.setenv("APP_ENV", "prod")
    monkeypatch.setenv("SECRETS_ENCRYPTION_KEY", f"k1:{KEY_A}")
    for command in (["serve"], ["worker"]):
        with pytest.raises(SystemExit) as exc:
            main(command)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "API_DATABASE_URL is required when APP_ENV=prod" in err
    assert "WORKER_DATABASE_URL is required when APP_ENV=prod" in err


def test_check_env_refuses_the_operator_login_or_a_local_password_for_the_processes() -> None:
    settings = get_settings(
        app_env=AppEnv.PROD,
        database_url="postgresql://postgres:opw@db.example.com/postgres",
        api_database_url="postgresql://postgres:opw@db.example.com/postgres",
        worker_database_url=(
            "postgresql://agentmarket_worker:agentmarket-worker-local@db.example.com/postgres"
        ),
    )
    problems = {(p.setting, p.problem, p.required) for p in check_env(settings)}
    assert (
        "API_DATABASE_URL",
        "logs in as postgres, the operator's DATABASE_URL login: use a least-privilege login "
        "(docs/operations.md)",
        True,
    ) in problems
    assert ("WORKER_DATABASE_URL", "still the local development password", True) in problems
    assert all("opw" not in p[1] for p in problems)


def test_allow_http_urls_is_off_by_default_and_noted_in_prod() -> None:
    assert get_settings().allow_http_urls is False
    assert [
        p for p in check_env(get_settings(app_env="prod")) if p.setting == "ALLOW_HTTP_URLS"
    ] == []
    prod = get_settings(app_env="prod", allow_http_urls=True)
    [problem] = [p for p in check_env(prod) if p.setting == "ALLOW_HTTP_URLS"]
    assert not problem.required


def test_check_env_notes_a_fallback_model_left_off_for_want_of_its_own_key() -> None:
    def settings(base_url: str | None, key: str | None) -> Settings:
        return Settings(
            openai_api_key=SecretStr("sk-platform-0000000000000000"),
            openai_fallback_model="backup-model",
            openai_fallback_base_url=base_url,
            openai_fallback_api_key=SecretStr(key) if key else None,
        )

    other = "https://fallback.example/v1"
    noted = {p.setting: p for p in check_env(settings(other, None))}
    assert noted["OPENAI_FALLBACK_API_KEY"].required is False
    for quiet in (settings(other, "sk-fallback-000000000000"), settings(None, None)):
        assert "OPENAI_FALLBACK_API_KEY" not in {p.setting for p in check_env(quiet)}
