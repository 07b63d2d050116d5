from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from agentmarket.cli import main
from agentmarket.core import paths
from agentmarket.ops import migrate, sqlsplit

pytestmark = pytest.mark.db


def pg_dump_schema(url: str) -> str:
    result = subprocess.run(
        ["pg_dump", "--schema-only", "--no-owner", f"--dbname={url}"],
        capture_output=True,
        text=True,
        check=True,
    )
    # pg_dump 15.14+ fences the script with a random \\restrict key: not part of the schema.
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def schema_dump(url: str) -> str:
    """Everything about the database that a migration could change: schema and the history rows."""
    with psycopg.connect(url) as conn:
        history = conn.execute(
            "select coalesce(json_agg(h order by version), '[]')::text"
            " from supabase_migrations.schema_migrations h"
        ).fetchone()
    return pg_dump_schema(url) + "\n-- history\n" + (history[0] if history else "")


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    shutil.copytree(paths.migrations_dir(), target)
    return target


@pytest.fixture
def env_db(monkeypatch: pytest.MonkeyPatch, empty_db_url: str) -> str:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    monkeypatch.delenv("DATABASE_DIRECT_URL", raising=False)
    return empty_db_url


def test_migrating_an_empty_database_twice_is_a_noop_the_second_time(
    env_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "up"]) == 0
    first = capsys.readouterr().out
    files = sorted(p.name for p in paths.migrations_dir().glob("*.sql"))
    assert "applied sql/local_supabase.sql" in first
    for name in files:
        assert f"applied {name}" in first
    before = schema_dump(env_db)

    assert main(["migrate", "up"]) == 0
    second = capsys.readouterr().out
    assert "database is up to date" in second
    assert "applied" not in second
    assert schema_dump(env_db) == before


def test_history_is_recorded_as_the_supabase_cli_records_it(env_db: str) -> None:
    assert main(["migrate", "up"]) == 0
    with psycopg.connect(env_db) as conn:
        rows = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations"
            " order by version"
        ).fetchall()
    expected = []
    for path in sorted(paths.migrations_dir().glob("*.sql")):
        version, _, rest = path.name.partition("_")
        expected.append((version, rest.removesuffix(".sql"), sqlsplit.split(path.read_text())))
    assert rows == expected


def test_a_broken_file_leaves_the_database_exactly_as_before_and_stops_the_run(
    env_db: str, migrations_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 0
    before = schema_dump(env_db)
    (migrations_copy / "29990101000000_broken.sql").write_text(
        "create table public.half_done (id int);\n"
        "insert into public.half_done values (1);\n"
        "alter table public.marketplace_agents add column oops int;\n"
        "select 1 / 0;\n"
    )
    (migrations_copy / "29990102000000_after.sql").write_text(
        "create table public.never_reached (id int);\n"
    )
    capsys.readouterr()

    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 1
    err = capsys.readouterr().err
    assert "29990101000000_broken.sql: statement 4 failed" in err
    assert "division by zero" in err
    assert schema_dump(env_db) == before

    with psycopg.connect(env_db) as conn:
        status = migrate.status(conn, migrations_copy)
    assert [(e.version, e.state) for e in status[-2:]] == [
        ("29990101000000", migrate.MigrationState.PENDING),
        ("29990102000000", migrate.MigrationState.PENDING),
    ]


def test_an_applied_file_edited_since_is_refused_before_anything_runs(
    env_db: str, migrations_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 0
    first = sorted(migrations_copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\ncreate table public.sneaky (id int);\n")
    (migrations_copy / "29990101000000_new.sql").write_text("create table public.newer (id int);")
    before = schema_dump(env_db)
    capsys.readouterr()

    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 1
    err = capsys.readouterr().err
    assert f"already applied but changed since: {first.name}" in err
    assert schema_dump(env_db) == before

    assert main(["migrate", "status", "--dir", str(migrations_copy)]) == 1
    out = capsys.readouterr().out
    assert "edited" in out
    assert "1 pending, 1 in conflict" in out


def test_reformatting_whitespace_is_not_an_edit(env_db: str, migrations_copy: Path) -> None:
    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 0
    first = sorted(migrations_copy.glob("*.sql"))[0]
    first.write_text("\n\n" + first.read_text().replace("\n", "\n  ") + "\n\n")
    with psycopg.connect(env_db) as conn:
        states = {e.state for e in migrate.status(conn, migrations_copy)}
    assert states == {migrate.MigrationState.APPLIED}


def test_a_version_missing_from_the_checkout_is_refused(
    env_db: str, migrations_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 0
    last = sorted(migrations_copy.glob("*.sql"))[-1]
    last.unlink()
    (migrations_copy / "29990101000000_new.sql").write_text("create table public.newer (id int);")
    capsys.readouterr()
    assert main(["migrate", "up", "--dir", str(migrations_copy)]) == 1
    assert "the database has migrations this checkout lacks" in capsys.readouterr().err
    with psycopg.connect(env_db) as conn:
        assert conn.execute("select to_regclass('public.newer')").fetchone() == (None,)


def test_dry_run_reports_and_changes_nothing(
    env_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = pg_dump_schema(env_db)
    assert main(["migrate", "up", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would apply sql/local_supabase.sql" in out
    assert f"{len(list(paths.migrations_dir().glob('*.sql')))} to apply" in out
    after = pg_dump_schema(env_db)
    assert after == before


def test_backup_dumps_the_database_before_migrating(
    env_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(env_db, autocommit=True) as conn:
        conn.execute("create table public.precious (v text)")
        conn.execute("insert into public.precious values ('keep me')")
    target = tmp_path / "backups" / "before.dump"
    assert main(["migrate", "up", "--backup", str(target)]) == 0
    assert f"backup written to {target}" in capsys.readouterr().out
    listing = subprocess.run(
        ["pg_restore", "--list", str(target)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE DATA public precious" in listing
    # Taken before the migrations: the dump has none of their tables.
    assert "marketplace_agents" not in listing


def test_the_local_shim_is_idempotent_and_skipped_when_supabase_objects_exist(
    env_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "up"]) == 0
    with psycopg.connect(env_db, autocommit=True) as conn:
        assert migrate.needs_local_shim(conn) is False
        # Applying it again (as on a real Supabase project) changes nothing and does not fail.
        before = schema_dump(env_db)
        migrate.apply_local_shim(conn, paths.local_shim_path())
    assert schema_dump(env_db) == before
