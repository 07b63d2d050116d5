"""The curated catalog: data files in `seeds/agents/*.yaml`, upserted by slug.

One renderer turns the data into SQL. `agentmarket seed` executes it; `supabase/seed.sql` is the
same SQL written to a file (for `supabase db reset` / `db push --include-seed`), and a test fails if
the file drifts from the data. Each upsert only touches a row whose values differ, so a re-run
changes nothing (no row version, no `updated_at`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

__all__ = [
    "AgentSeed",
    "CatalogSummary",
    "SeedError",
    "SeedResult",
    "apply",
    "load_catalog",
    "render_agent",
    "render_sql",
    "summary",
]

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=64)]

# Columns written by the seed, in order. Everything else (id, deploy_count, timestamps) is the
# database's to keep.
AGENT_COLUMNS = (
    "slug",
    "name",
    "tagline",
    "description",
    "category",
    "tags",
    "kind",
    "pricing_model",
    "price_cents",
    "currency",
    "model",
    "rate_limit_per_minute",
    "icon",
    "featured",
    "is_published",
    "example_prompts",
    "config_schema",
    "default_config",
)


class SeedError(Exception):
    """The catalog data is invalid."""


class AgentSeed(BaseModel):
    """One catalog entry as written in seeds/agents/<slug>.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: Slug
    name: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    tagline: Annotated[str, StringConstraints(max_length=140)]
    description: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    category: Slug
    tags: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(max_length=12)]
    kind: Literal["chat", "content", "support"]
    pricing_model: Literal["free", "subscription", "pay_per_use", "one_time"]
    price_cents: Annotated[int, Field(ge=0)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "USD"
    model: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    rate_limit_per_minute: Annotated[int, Field(ge=1, le=10_000)]
    icon: Annotated[str, StringConstraints(max_length=16)] | None = None
    featured: bool = False
    is_published: bool = True
    example_prompts: list[str] = Field(default_factory=list)
    system_prompt: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    config_schema: dict[str, Any]
    default_config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> AgentSeed:
        if (self.pricing_model == "free") != (self.price_cents == 0):
            raise ValueError("price_cents must be 0 exactly when pricing_model is free")
        try:
            Draft202012Validator.check_schema(self.config_schema)
        except SchemaError as exc:
            raise ValueError(f"config_schema is not a valid JSON Schema: {exc.message}") from exc
        errors = sorted(
            Draft202012Validator(self.config_schema).iter_errors(self.default_config),
            key=lambda e: list(e.path),
        )
        # default_config may leave out required fields the user must supply (e.g. their API key).
        blocking = [e for e in errors if e.validator != "required"]
        if blocking:
            raise ValueError(f"default_config does not match config_schema: {blocking[0].message}")
        return self


def load_catalog(directory: Path) -> list[AgentSeed]:
    """Every agent file, validated; errors name the file."""
    agents: list[AgentSeed] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            agent = AgentSeed.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise SeedError(f"{path.name}: {exc}") from exc
        if agent.slug != path.stem:
            raise SeedError(f"{path.name}: slug {agent.slug!r} does not match the file name")
        agents.append(agent)
    if not agents:
        raise SeedError(f"no agent files in {directory}")
    return agents


# --- rendering ---------------------------------------------------------------------------------


def _text(value: str) -> str:
    # standard_conforming_strings is on (the default since PostgreSQL 9.1): only ' needs doubling.
    if "\x00" in value:
        raise SeedError("NUL characters cannot be stored in text")
    return "'" + value.replace("'", "''") + "'"


def _literal(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return (
            "array[" + ", ".join(_text(v) for v in value) + "]::text[]" if value else "'{}'::text[]"
        )
    if isinstance(value, dict):
        return _text(json.dumps(value, ensure_ascii=False, sort_keys=True)) + "::jsonb"
    raise SeedError(f"cannot render {type(value).__name__}")


def render_agent(agent: AgentSeed) -> list[str]:
    """Two idempotent statements: the catalog row, then its private system prompt."""
    data = agent.model_dump()
    columns = ", ".join(AGENT_COLUMNS)
    values = ",\n  ".join(_literal(data[c]) for c in AGENT_COLUMNS)
    updatable = [c for c in AGENT_COLUMNS if c != "slug"]
    assignments = ",\n  ".join(f"{c} = excluded.{c}" for c in updatable)
    current = ", ".join(f"marketplace_agents.{c}" for c in updatable)
    incoming = ", ".join(f"excluded.{c}" for c in updatable)
    upsert_agent = (
        f"insert into public.marketplace_agents ({columns})\nvalues (\n  {values}\n)\n"
        f"on conflict (slug) do update set\n  {assignments}\n"
        f"where ({current})\n  is distinct from ({incoming})"
    )
    upsert_prompt = (
        "insert into private.agent_prompts (agent_id, system_prompt)\n"
        f"select id, {_text(agent.system_prompt)}\n"
        f"from public.marketplace_agents where slug = {_text(agent.slug)}\n"
        "on conflict (agent_id) do update set system_prompt = excluded.system_prompt\n"
        "where agent_prompts.system_prompt is distinct from excluded.system_prompt"
    )
    return [upsert_agent, upsert_prompt]


SEED_SQL_HEADER = """\
-- GENERATED by `agentmarket seed --write-sql` from seeds/agents/*.yaml. Do not edit by hand:
-- change the YAML and regenerate (a test fails when this file and the data disagree).
-- Upserts by slug; re-running it changes no row.
"""


def render_sql(agents: list[AgentSeed]) -> str:
    statements = [stmt for agent in agents for stmt in render_agent(agent)]
    return SEED_SQL_HEADER + "\n" + "".join(f"{stmt};\n\n" for stmt in statements).rstrip() + "\n"


# --- applying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedResult:
    agents: int
    agents_changed: int
    prompts_changed: int


def apply(conn: psycopg.Connection, agents: list[AgentSeed]) -> SeedResult:
    """Upsert the whole catalog in one transaction."""
    agents_changed = prompts_changed = 0
    with conn.transaction():
        for agent in agents:
            upsert_agent, upsert_prompt = render_agent(agent)
            agents_changed += conn.execute(upsert_agent, prepare=False).rowcount
            prompts_changed += conn.execute(upsert_prompt, prepare=False).rowcount
    return SeedResult(len(agents), agents_changed, prompts_changed)


@dataclass(frozen=True)
class CatalogSummary:
    published: int
    unpublished: int
    by_category: list[tuple[str, int]]
    by_kind: list[tuple[str, int]]
    by_pricing: list[tuple[str, int]]


def summary(conn: psycopg.Connection) -> CatalogSummary:
    rows = conn.execute(
        "select category, kind, pricing_model, is_published from public.marketplace_agents"
    ).fetchall()
    published = [r for r in rows if r[3]]
    return CatalogSummary(
        published=len(published),
        unpublished=len(rows) - len(published),
        by_category=sorted(Counter(r[0] for r in published).items()),
        by_kind=sorted(Counter(r[1] for r in published).items()),
        by_pricing=sorted(Counter(r[2] for r in published).items()),
    )
