from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from agentmarket.cli import main
from agentmarket.core import paths
from agentmarket.ops import seed
from tests.conftest import Server

pytestmark = pytest.mark.db

CATALOG = seed.load_catalog(paths.seeds_dir() / "agents")


def secret_fields(schema: dict[str, Any]) -> list[str]:
    return [name for name, prop in schema.get("properties", {}).items() if prop.get("writeOnly")]


def test_catalog_is_curated_as_promised() -> None:
    published = [a for a in CATALOG if a.is_published]
    assert len(published) >= 12
    assert len({a.category for a in published}) >= 5
    assert {a.pricing_model for a in published} == {
        "free",
        "subscription",
        "pay_per_use",
        "one_time",
    }
    assert {"chat", "content", "support"} <= {a.kind for a in published}
    with_secret = [a for a in CATALOG if secret_fields(a.config_schema)]
    assert len(with_secret) >= 3
    assert len(CATALOG) - len(with_secret) >= 2
    for agent in with_secret:
        props = agent.config_schema["properties"]
        for name in secret_fields(agent.config_schema):
            assert props[name]["type"] == "string"
            assert name not in agent.default_config, f"{agent.slug}: default for secret {name}"
        if "openai_api_key" in props:
            assert props["openai_api_key"]["writeOnly"] is True


@pytest.mark.parametrize("agent", CATALOG, ids=lambda a: a.slug)
def test_every_config_schema_is_documented(agent: seed.AgentSeed) -> None:
    schema = agent.config_schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema.get("required"), "a real schema says what is required"
    for name, prop in schema["properties"].items():
        assert prop.get("title") and prop.get("description"), f"{name} lacks title/description"
    assert len(agent.description) >= 120
    assert agent.example_prompts


def test_seeded_database_holds_the_catalog_and_every_prompt(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        "select a.slug, a.is_published, p.system_prompt is not null"
        " from public.marketplace_agents a left join private.agent_prompts p on p.agent_id = a.id"
    ).fetchall()
    assert {r[0] for r in rows} == {a.slug for a in CATALOG}
    assert all(r[2] for r in rows)
    assert sum(r[1] for r in rows) == sum(a.is_published for a in CATALOG)


def row_versions(conn: psycopg.Connection) -> dict[str, tuple[str, object]]:
    return {
        slug: (xmin, updated)
        for slug, xmin, updated in conn.execute(
            "select a.slug, a.xmin::text || '/' || p.xmin::text, a.updated_at"
            " from public.marketplace_agents a join private.agent_prompts p on p.agent_id = a.id"
        ).fetchall()
    }


def test_reseeding_changes_no_row(conn: psycopg.Connection) -> None:
    before = row_versions(conn)
    result = seed.apply(conn, CATALOG)
    assert (result.agents, result.agents_changed, result.prompts_changed) == (len(CATALOG), 0, 0)
    assert row_versions(conn) == before


def test_reseeding_after_an_edit_updates_only_that_agent(
    conn: psycopg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    for path in (paths.seeds_dir() / "agents").glob("*.yaml"):
        (agents_dir / path.name).write_text(path.read_text())
    target = agents_dir / f"{CATALOG[0].slug}.yaml"
    data = yaml.safe_load(target.read_text())
    data["tagline"] = "A sharper tagline"
    target.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    before = row_versions(conn)

    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["seed", "--dir", str(agents_dir)]) == 0

    after = row_versions(conn)
    changed = {slug for slug in before if before[slug] != after[slug]}
    assert changed == {CATALOG[0].slug}
    tagline = conn.execute(
        "select tagline from public.marketplace_agents where slug = %s", (CATALOG[0].slug,)
    ).fetchone()
    assert tagline == ("A sharper tagline",)


def test_seed_sql_is_generated_from_the_data_and_has_not_drifted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert paths.seed_sql_path().read_text() == seed.render_sql(CATALOG)
    assert main(["seed", "--check-sql"]) == 0
    assert "matches seeds/" in capsys.readouterr().out


def test_check_sql_fails_when_the_file_drifts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "seed.sql"
    stale.write_text(paths.seed_sql_path().read_text().replace("Helpdesk Hero", "Helpdesk Zero"))
    assert main(["seed", "--check-sql", "--sql-file", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err


CATALOG_QUERY = """
select a.slug, a.name, a.tagline, a.description, a.category, a.tags, a.kind, a.pricing_model,
       a.price_cents, a.currency, a.model, a.rate_limit_per_minute, a.icon, a.featured,
       a.is_published, a.example_prompts, a.config_schema, a.default_config, p.system_prompt
  from public.marketplace_agents a join private.agent_prompts p on p.agent_id = a.id
 order by a.slug
"""


def test_seed_sql_run_by_psql_gives_the_same_catalog_as_the_seed_command(
    pg_server: Server, conn: psycopg.Connection
) -> None:
    name = pg_server.create()
    try:
        url = pg_server.uri_for(name)
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("truncate public.marketplace_agents cascade")
        for _ in range(2):  # and a second run is harmless
            subprocess.run(
                ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(paths.seed_sql_path()), url],
                check=True,
                capture_output=True,
            )
        with psycopg.connect(url) as other:
            from_sql = other.execute(CATALOG_QUERY).fetchall()
    finally:
        pg_server.drop(name)
    assert from_sql == conn.execute(CATALOG_QUERY).fetchall()


def test_invalid_catalog_data_is_rejected_with_the_file_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = yaml.safe_load((paths.seeds_dir() / "agents" / f"{CATALOG[0].slug}.yaml").read_text())
    bad["pricing_model"] = "free"  # a free agent with a price
    bad["price_cents"] = 500
    (tmp_path / f"{CATALOG[0].slug}.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    assert main(["seed", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{CATALOG[0].slug}.yaml" in err
    assert "price_cents must be 0 exactly when pricing_model is free" in err


def test_catalog_counts_match_the_summary(conn: psycopg.Connection) -> None:
    summary = seed.summary(conn)
    published = [a for a in CATALOG if a.is_published]
    assert summary.published == len(published)
    assert dict(summary.by_category) == dict(Counter(a.category for a in published))
