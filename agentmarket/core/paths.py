"""Where the project's non-Python files live (migrations, SQL, seeds)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["local_shim_path", "migrations_dir", "project_root", "seed_sql_path", "seeds_dir"]


def project_root() -> Path:
    """The checkout holding `supabase/` and `seeds/`.

    `AGENTMARKET_ROOT` wins; otherwise the directory above this package (an editable install, which
    is how ./scripts/dev and ./scripts/test install the project).
    """
    env = os.environ.get("AGENTMARKET_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def migrations_dir() -> Path:
    return project_root() / "supabase" / "migrations"


def local_shim_path() -> Path:
    return project_root() / "sql" / "local_supabase.sql"


def seeds_dir() -> Path:
    return project_root() / "seeds"


def seed_sql_path() -> Path:
    return project_root() / "supabase" / "seed.sql"
