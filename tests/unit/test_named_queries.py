"""The named-query loader: how a file is read, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmarket.db import queries


def test_blocks_are_split_by_name_with_their_descriptions() -> None:
    source = """-- The chat queue.

-- name: claim_jobs
-- Claims up to %(limit)s jobs.
-- Skips locked rows.
select * from private.claim_chat_jobs(%(worker_id)s, %(limit)s);

-- name: queue_depth
select count(*)
  from private.chat_jobs
 where status = 'queued';
"""
    found = queries.parse(source, "q.sql")
    assert [q.name for q in found] == ["claim_jobs", "queue_depth"]
    assert found[0].text == "select * from private.claim_chat_jobs(%(worker_id)s, %(limit)s)"
    assert found[0].description == "Claims up to %(limit)s jobs. Skips locked rows."
    assert found[1].text.startswith("select count(*)\n  from private.chat_jobs")
    assert not found[1].text.endswith(";")
    assert {q.file for q in found} == {"q.sql"}


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("select 1;\n-- name: a\nselect 2;", "SQL before the first"),
        ("-- name: a\n-- only a comment\n", "has no SQL"),
    ],
)
def test_malformed_files_are_refused(source: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        queries.parse(source, "bad.sql")


def test_a_name_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: same\nselect 1;\n")
    (tmp_path / "b.sql").write_text("-- name: same\nselect 2;\n")
    with pytest.raises(ValueError, match=r"defined in both a\.sql and b\.sql"):
        queries.load(tmp_path)


def test_unknown_name_says_which() -> None:
    with pytest.raises(KeyError, match="no_such_query"):
        queries.query("no_such_query")


def test_the_shipped_files_load_and_are_read_once() -> None:
    loaded = queries.load()
    assert loaded, "agentmarket/db/sql/*.sql holds the project's queries"
    assert queries.load() is loaded
    for named in loaded.values():
        assert "%s" not in named.text, f"{named.name}: parameters are named, never positional"
        assert named.text == queries.query(named.name)
