"""The Supabase CLI and `agentmarket migrate` apply the same migrations and accept each
other's work."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from agentmarket.cli import main
from agentmarket.core import paths
from agentmarket.ops import migrate
from tests.conftest import Server
from tests.integration.test_migrate import schema_dump

pytestmark = [pytest.mark.db, pytest.mark.cli]


@pytest.fixture
def supabase_cli(tmp_path: Path) -> list[str]:
    binary = os.environ.get("AGENTMARKET_SUPABASE_CLI")
    if not binary:
        if os.environ.get("CI"):
            pytest.fail("the Supabase CLI must be installed in CI (./scripts/test installs it)")
        pytest.skip("Supabase CLI not installed (npm unavailable); ./scripts/test installs it")
    return [binary]


def run_cli(cli: list[str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SUPABASE_HOME": str(tmp_path / "supabase-home"),
        "SUPABASE_TELEMETRY_DISABLED": "1",
        "DO_NOT_TRACK": "1",
        "SUPABASE_NO_UPDATE_NOTIFIER": "1",
    }
    return subprocess.run(
        [*cli, *args, "--workdir", str(paths.project_root())],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def cli_url(url: str) -> str:
    return f"{url}?sslmode=disable"


def history(url: str) -> list[tuple[str, str, list[str]]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        ).fetchall()


def test_cli_and_agentmarket_apply_the_same_migrations_and_agree(
    supabase_cli: list[str],
    pg_server: Server,
    empty_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    by_cli = empty_db_url
    ours_name = pg_server.create(template="template0")
    by_us = pg_server.uri_for(ours_name)
    try:
        # Plain PostgreSQL: both databases get the shim a hosted project already has.
        with psycopg.connect(by_cli, autocommit=True) as conn:
            migrate.apply_local_shim(conn, paths.local_shim_path())

        pushed = run_cli(supabase_cli, tmp_path, "db", "push", "--yes", "--db-url", cli_url(by_cli))
        assert pushed.returncode == 0, pushed.stderr
        assert "Finished supabase db push" in pushed.stdout

        monkeypatch.setenv("DATABASE_URL", by_us)
        assert main(["migrate", "up"]) == 0

        # Same history rows, same schema.
        assert history(by_cli) == history(by_us)
        assert len(history(by_us)) == len(list(paths.migrations_dir().glob("*.sql")))
        assert schema_dump(by_cli) == schema_dump(by_us)

        # agentmarket sees the CLI's work as up to date ...
        monkeypatch.setenv("DATABASE_URL", by_cli)
        capsys.readouterr()
        assert main(["migrate", "status"]) == 0
        assert "0 pending, 0 in conflict" in capsys.readouterr().out
        assert main(["migrate", "up"]) == 0
        assert "database is up to date" in capsys.readouterr().out

        # ... and the CLI sees ours as up to date.
        again = run_cli(supabase_cli, tmp_path, "db", "push", "--yes", "--db-url", cli_url(by_us))
        assert again.returncode == 0, again.stderr
        assert "Remote database is up to date" in again.stdout
        assert history(by_cli) == history(by_us)
    finally:
        pg_server.drop(ours_name)
