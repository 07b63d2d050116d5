"""Named SQL queries, read once from `agentmarket/db/sql/*.sql` (docs/architecture.md#sql).

Each file holds blocks like

    -- name: claim_jobs
    -- Claims up to %(limit)s queued jobs for this worker.
    select * from private.claim_chat_jobs(%(worker_id)s, %(limit)s, %(lease_seconds)s);

A block runs from its `-- name:` line to the next one; the comment lines under the name describe
it, the rest is one statement with named parameters (`%(name)s`, psycopg's pyformat), bound from a
mapping at the call site. Values are always parameters, never formatted into the text. A trailing
`;` is dropped. Names are unique across files; `query(name)` returns the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["NamedQuery", "load", "query", "query_files"]

SQL_DIR = Path(__file__).with_name("sql")
_NAME = re.compile(r"^--\s*name:\s*([a-z][a-z0-9_]*)\s*$", re.M)


@dataclass(frozen=True)
class NamedQuery:
    name: str
    text: str
    description: str
    file: str


def query_files(directory: Path = SQL_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def parse(source: str, file: str) -> list[NamedQuery]:
    """The named blocks of one file; text before the first name must be comments only."""
    names = list(_NAME.finditer(source))
    preamble = source[: names[0].start()] if names else source
    if any(line.strip() and not line.strip().startswith("--") for line in preamble.splitlines()):
        raise ValueError(f"{file}: SQL before the first `-- name:` line")
    found: list[NamedQuery] = []
    for index, match in enumerate(names):
        end = names[index + 1].start() if index + 1 < len(names) else len(source)
        lines = source[match.end() : end].strip("\n").splitlines()
        described = 0
        while described < len(lines) and lines[described].lstrip().startswith("--"):
            described += 1
        text = "\n".join(lines[described:]).strip().removesuffix(";").strip()
        if not text:
            raise ValueError(f"{file}: query {match.group(1)!r} has no SQL")
        description = " ".join(line.strip().lstrip("-").strip() for line in lines[:described])
        found.append(NamedQuery(match.group(1), text, description, file))
    return found


@cache
def load(directory: Path = SQL_DIR) -> dict[str, NamedQuery]:
    """Every named query under `directory`, read once per process."""
    queries: dict[str, NamedQuery] = {}
    for path in query_files(directory):
        for named in parse(path.read_text(encoding="utf-8"), path.name):
            if named.name in queries:
                raise ValueError(
                    f"query {named.name!r} is defined in both "
                    f"{queries[named.name].file} and {named.file}"
                )
            queries[named.name] = named
    return queries


def query(name: str) -> str:
    """The SQL text of the named query (KeyError names the missing query)."""
    try:
        named = load()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in {SQL_DIR}") from None
    # Text from our own package files, never from input: as safe as a literal in the code.
    return named.text
