"""Forward-only migrations, recorded exactly as the Supabase CLI records them.

Each file `supabase/migrations/<version>_<name>.sql` runs in its own transaction together with its
row in `supabase_migrations.schema_migrations(version, name, statements)`, so a failing file leaves
nothing behind and stops the run. Files already applied (by this tool or by `supabase db push`) are
compared with what was recorded; an edited file stops the run before anything is applied.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psycopg
from psycopg import sql

from agentmarket.core.config import Settings
from agentmarket.ops import sqlsplit

__all__ = [
    "STORED_SETTINGS",
    "Applied",
    "Entry",
    "MigrationError",
    "MigrationFile",
    "MigrationState",
    "apply_local_shim",
    "backup",
    "enable_local_logins",
    "ensure_history_table",
    "fingerprint",
    "history_exists",
    "is_plain_postgres",
    "load_files",
    "needs_local_shim",
    "plan",
    "read_history",
    "status",
    "store_settings",
    "stored_settings",
    "up",
]

FILE_PATTERN = re.compile(r"^([0-9]+)_(.*)\.sql$")

# The statements the Supabase CLI runs before a push (kept identical so both tools agree).
HISTORY_TABLE_SETUP = (
    "SET lock_timeout = '4s'",
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations "
    "(version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)
INSERT_VERSION = (
    "INSERT INTO supabase_migrations.schema_migrations(version, name, statements) "
    "VALUES (%s, %s, %s)"
)
SELECT_HISTORY = (
    "SELECT version, coalesce(name, ''), coalesce(statements, '{}') "
    "FROM supabase_migrations.schema_migrations ORDER BY version"
)
# Serialises concurrent `migrate up` runs against one database.
ADVISORY_LOCK_KEY = 0x6167_6D6B  # "agmk"


class MigrationError(Exception):
    """A migration run that must not (or could not) go on."""


class MigrationState(StrEnum):
    APPLIED = "applied"
    PENDING = "pending"
    EDITED = "edited"  # applied, but the file changed since
    MISSING = "missing"  # recorded in the database, no such file here


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    path: Path
    statements: list[str]

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Applied:
    version: str
    name: str
    statements: list[str]


@dataclass(frozen=True)
class Entry:
    version: str
    name: str
    state: MigrationState


def load_files(directory: Path) -> list[MigrationFile]:
    files: list[MigrationFile] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_PATTERN.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: not named <version>_<name>.sql")
        statements = sqlsplit.split(path.read_text(encoding="utf-8"))
        files.append(MigrationFile(match[1], match[2], path, statements))
    versions = [f.version for f in files]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version")
    return files


def fingerprint(statements: Iterable[str]) -> str:
    """The SQL without whitespace and separators: equal for the same SQL however it was split."""
    return re.sub(r"[\s;]+", "", "".join(statements))


def ensure_history_table(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for stmt in HISTORY_TABLE_SETUP:
            conn.execute(stmt)


def history_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT to_regclass('supabase_migrations.schema_migrations') IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])


def read_history(conn: psycopg.Connection) -> list[Applied]:
    if not history_exists(conn):
        return []
    return [Applied(v, n, list(s)) for v, n, s in conn.execute(SELECT_HISTORY).fetchall()]


def plan(files: list[MigrationFile], applied: list[Applied]) -> list[Entry]:
    by_version = {a.version: a for a in applied}
    local = {f.version for f in files}
    entries: list[Entry] = []
    for f in files:
        done = by_version.get(f.version)
        if done is None:
            entries.append(Entry(f.version, f.name, MigrationState.PENDING))
        elif fingerprint(done.statements) != fingerprint(f.statements):
            entries.append(Entry(f.version, f.name, MigrationState.EDITED))
        else:
            entries.append(Entry(f.version, f.name, MigrationState.APPLIED))
    entries.extend(
        Entry(a.version, a.name, MigrationState.MISSING) for a in applied if a.version not in local
    )
    return sorted(entries, key=lambda e: e.version)


def status(conn: psycopg.Connection, directory: Path) -> list[Entry]:
    return plan(load_files(directory), read_history(conn))


def needs_local_shim(conn: psycopg.Connection) -> bool:
    """True on a plain PostgreSQL that lacks what Supabase provides (roles, auth schema)."""
    row = conn.execute(
        "SELECT to_regclass('auth.users') IS NULL"
        " OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated')"
        " OR to_regprocedure('auth.uid()') IS NULL"
    ).fetchone()
    return bool(row and row[0])


def apply_local_shim(conn: psycopg.Connection, shim: Path) -> None:
    with conn.transaction():
        conn.execute(shim.read_text(encoding="utf-8"))


def is_plain_postgres(conn: psycopg.Connection) -> bool:
    """True on a cluster without Supabase's platform roles (hosted projects and the Supabase CLI's
    local stack have `supabase_admin`): only there may local passwords be given to our logins."""
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_admin')"
    ).fetchone()
    return bool(row and row[0])


def enable_local_logins(conn: psycopg.Connection, passwords: dict[str, str]) -> list[str]:
    """Let the processes' roles (created NOLOGIN by the migrations) log in with local passwords.

    Roles are cluster-wide, so this only touches a role that cannot log in yet: a role an operator
    already gave a login keeps its password. Returns the roles changed.
    """
    changed: list[str] = []
    for role, password in passwords.items():
        if _can_login(conn, role) is not False:
            continue  # missing (migrations not applied) or already a login
        statement = sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
        try:
            conn.execute(statement)
        except psycopg.Error:
            # Another database of this cluster being migrated at the same moment did it first.
            if not _can_login(conn, role):
                raise
            continue
        changed.append(role)
    return changed


def _can_login(conn: psycopg.Connection, role: str) -> bool | None:
    row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    return None if row is None else bool(row[0])


# The settings the database enforces itself, by private.app_settings column (docs/api.md#limits).
STORED_SETTINGS: dict[str, str] = {
    "max_active_deployments": "max_active_deployments",
    "chat_per_minute": "rate_limit_chat_per_minute",
    "deploy_per_minute": "rate_limit_deploy_per_minute",
    "conversations_per_minute": "rate_limit_conversations_per_minute",
    "max_in_flight_per_user": "chat_max_in_flight_per_user",
    "platform_tokens_per_day": "platform_tokens_per_user_per_day",
    "max_deployments_per_user": "max_deployments_per_user",
}


def stored_settings(settings: Settings) -> dict[str, int]:
    """The values of `STORED_SETTINGS` in `settings`, by column."""
    return {column: int(getattr(settings, name)) for column, name in STORED_SETTINGS.items()}


def store_settings(conn: psycopg.Connection, **values: int) -> list[str]:
    """Write the limits the database enforces itself into `private.app_settings` (its functions
    read them there, never from their caller): keyword = column (`STORED_SETTINGS`). Only the
    columns the table has are written (an older schema lacks the newer ones). Returns the
    columns whose value changed."""
    unknown = set(values) - set(STORED_SETTINGS)
    if unknown:
        raise ValueError(f"not a stored setting: {sorted(unknown)}")
    present = {
        name
        for (name,) in conn.execute(
            "SELECT column_name::text FROM information_schema.columns"
            " WHERE table_schema = 'private' AND table_name = 'app_settings'"
        ).fetchall()
    }
    changed: list[str] = []
    for column, value in values.items():
        if column not in present:
            continue
        cur = conn.execute(
            sql.SQL(
                "UPDATE private.app_settings SET {col} = %s WHERE {col} IS DISTINCT FROM %s"
            ).format(col=sql.Identifier(column)),
            (value, value),
        )
        if cur.rowcount > 0:
            changed.append(column)
    return changed


def backup(database_url: str, target: Path) -> None:
    """pg_dump (custom format) of the whole database before anything changes."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise MigrationError("--backup needs pg_dump on PATH (PostgreSQL client tools)")
    target.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [pg_dump, "--format=custom", "--no-owner", f"--file={target}", f"--dbname={database_url}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise MigrationError(f"backup failed, nothing was migrated: {result.stderr.strip()}")


def up(
    conn: psycopg.Connection,
    directory: Path,
    *,
    dry_run: bool = False,
    on_apply: Callable[[MigrationFile], None] | None = None,
) -> list[MigrationFile]:
    """Apply pending files in version order; return those applied (or, with dry_run, to apply)."""
    files = load_files(directory)
    conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
    try:
        entries = plan(files, read_history(conn))
        edited = [e for e in entries if e.state is MigrationState.EDITED]
        if edited:
            names = ", ".join(f"{e.version}_{e.name}.sql" for e in edited)
            raise MigrationError(
                f"already applied but changed since: {names}. Applied migrations are immutable; "
                "revert the edit and put the change in a new migration file."
            )
        missing = [e for e in entries if e.state is MigrationState.MISSING]
        if missing:
            names = ", ".join(e.version for e in missing)
            raise MigrationError(
                f"the database has migrations this checkout lacks: {names}. "
                "Update the checkout before migrating."
            )
        pending_versions = {e.version for e in entries if e.state is MigrationState.PENDING}
        pending = [f for f in files if f.version in pending_versions]
        if dry_run or not pending:
            return pending
        ensure_history_table(conn)
        for migration in pending:
            _apply_one(conn, migration)
            if on_apply is not None:
                on_apply(migration)
        return pending
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def _apply_one(conn: psycopg.Connection, migration: MigrationFile) -> None:
    try:
        with conn.transaction():
            for index, stmt in enumerate(migration.statements, start=1):
                try:
                    conn.execute(stmt, prepare=False)
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"{migration.filename}: statement {index} failed: "
                        f"{_describe(exc)}\n{_excerpt(stmt)}"
                    ) from exc
            conn.execute(INSERT_VERSION, (migration.version, migration.name, migration.statements))
    except MigrationError:
        raise
    except psycopg.Error as exc:
        raise MigrationError(f"{migration.filename}: {_describe(exc)}") from exc


def _describe(exc: psycopg.Error) -> str:
    diag = exc.diag
    parts = [diag.message_primary or str(exc).strip()]
    if diag.message_detail:
        parts.append(diag.message_detail)
    if diag.sqlstate:
        parts.append(f"(SQLSTATE {diag.sqlstate})")
    return " ".join(parts)


def _excerpt(stmt: str, limit: int = 400) -> str:
    return stmt if len(stmt) <= limit else stmt[:limit] + " …"
