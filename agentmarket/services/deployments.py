"""Deploy an agent and manage deployments.

Reads run as the caller under RLS; writes go through private SECURITY DEFINER functions that check
`auth.uid()` themselves (clients cannot insert deployments directly: that would skip validation,
secret encryption and the cap). Another user's deployment is simply not found. Those functions
take no cap and no status from us: they read the cap from the database and accept a config only
with our signature over what we validated (`agentmarket.signing`), deriving the status from it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from typing import Any

import psycopg
from psycopg.rows import dict_row

from agentmarket.core.errors import (
    AgentNotFound,
    Conflict,
    DeploymentLimitReached,
    DeploymentNotFound,
    DeploymentTotalLimit,
    InvalidConfig,
    LimitExceeded,
)
from agentmarket.core.metrics import DEPLOYMENTS
from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.db.sqlstate import app_errors
from agentmarket.domain import configschema
from agentmarket.domain.models import (
    AgentRef,
    Deployment,
    DeploymentList,
    DeploymentPatch,
    DeploymentStatus,
    DeployRequest,
)
from agentmarket.domain.secrets import SecretBox, secret_aad
from agentmarket.domain.signing import DeploymentSigner, config_text
from agentmarket.services.catalog import agent_key
from agentmarket.services.telemetry import track

__all__ = [
    "ConfigRules",
    "delete_deployment",
    "deploy_agent",
    "get_deployment",
    "list_deployments",
    "update_deployment",
]


@dataclasses.dataclass(frozen=True)
class ConfigRules:
    """What a configuration must keep to besides its agent's schema (from the settings):
    `allow_http_urls` (ALLOW_HTTP_URLS) lets `format: uri` fields hold http URLs;
    `max_knowledge_base_bytes` (MAX_KNOWLEDGE_BASE_BYTES) caps a new `knowledge_base`."""

    allow_http_urls: bool = False
    max_knowledge_base_bytes: int | None = None


async def _secret_hints(
    conn: psycopg.AsyncConnection, ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, str]]:
    hints: dict[uuid.UUID, dict[str, str]] = defaultdict(dict)
    if ids:
        async with conn.cursor() as cur:
            await cur.execute(query("deployment_secret_hints"), {"ids": ids})
            for deployment_id, field, hint in await cur.fetchall():
                hints[deployment_id][field] = hint
    return hints


def _deployment(row: dict[str, Any], secrets: dict[str, str]) -> Deployment:
    agent = (
        AgentRef(
            id=row["agent_id"],
            slug=row["agent_slug"],
            name=row["agent_name"],
            kind=row["agent_kind"],
            icon=row["agent_icon"],
        )
        if row.get("agent_slug") is not None
        else None
    )
    return Deployment(
        id=row["id"],
        agent_id=row["agent_id"],
        agent=agent,
        name=row["name"],
        config=row["config"],
        secrets=secrets,
        status=row["status"],
        status_reason=row["status_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_active_at=row["last_active_at"],
    )


async def _store_secrets(
    conn: psycopg.AsyncConnection, box: SecretBox, deployment_id: uuid.UUID, secrets: dict[str, str]
) -> None:
    for field, value in sorted(secrets.items()):
        sealed = box.seal(value, aad=secret_aad(deployment_id, field))
        await conn.execute(
            query("deployment_put_secret"),
            {
                "deployment_id": deployment_id,
                "field": field,
                "key_id": sealed.key_id,
                "ciphertext": sealed.ciphertext,
                "hint": sealed.hint,
            },
        )


async def _load(conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("deployment_one"), {"id": deployment_id})
        row = await cur.fetchone()
    if row is None:
        raise DeploymentNotFound()
    return row


async def _deployment_of(conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> Deployment:
    row = await _load(conn, deployment_id)
    hints = await _secret_hints(conn, [deployment_id])
    return _deployment(row, hints.get(deployment_id, {}))


async def _agent_for_deploy(conn: psycopg.AsyncConnection, agent: str) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("deployment_agent_for_deploy"), agent_key(agent))
        row = await cur.fetchone()
    if row is None:
        raise AgentNotFound()
    return row


async def _create(
    conn: psycopg.AsyncConnection,
    request: DeployRequest,
    box: SecretBox,
    signer: DeploymentSigner,
    user_id: uuid.UUID,
    rules: ConfigRules,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate, create and seal: (the agent, the created row)."""
    agent = await _agent_for_deploy(conn, request.agent_id)
    validated = configschema.validate_config(
        agent["config_schema"],
        request.config,
        defaults=agent["default_config"],
        partial=True,
        allow_http_urls=rules.allow_http_urls,
        max_knowledge_base_bytes=rules.max_knowledge_base_bytes,
    )
    text = config_text(validated.public)
    missing = list(validated.missing_required)
    signature = await signer.sign("create", user_id, agent["id"], text, missing)
    with app_errors():
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                query("deployment_create"),
                {
                    "agent_id": agent["id"],
                    "name": request.name or agent["name"],
                    "config": text,
                    "missing": missing,
                    "signature": signature,
                },
            )
            created = await cur.fetchone()
    assert created is not None
    await _store_secrets(conn, box, created["id"], validated.secrets)
    return agent, created


async def deploy_agent(
    *,
    db: CallerSession,
    request: DeployRequest,
    box: SecretBox,
    signer: DeploymentSigner,
    user_id: uuid.UUID,
    rules: ConfigRules,
) -> Deployment:
    """Validate the config against the agent's schema and `rules`, create the deployment (the
    database checks the deploy rate and the caps on deployments), seal its secrets."""
    conn = await db.conn()
    try:
        agent, created = await _create(conn, request, box, signer, user_id, rules)
    except (
        AgentNotFound,
        InvalidConfig,
        DeploymentLimitReached,
        DeploymentTotalLimit,
        LimitExceeded,
    ) as exc:
        DEPLOYMENTS.labels(result=exc.code).inc()
        raise
    DEPLOYMENTS.labels(result="success").inc()
    await track(
        "marketplace.agent.deployed",
        db=db,
        agent_id=agent["id"],
        deployment_id=created["id"],
        slug=agent["slug"],
        status=created["status"],
    )
    return await _deployment_of(conn, created["id"])


async def list_deployments(*, db: CallerSession) -> DeploymentList:
    conn = await db.conn()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("deployments_list"))
        rows = await cur.fetchall()
    hints = await _secret_hints(conn, [r["id"] for r in rows])
    return DeploymentList(data=[_deployment(r, hints.get(r["id"], {})) for r in rows])


async def get_deployment(*, db: CallerSession, deployment_id: uuid.UUID) -> Deployment:
    return await _deployment_of(await db.conn(), deployment_id)


@dataclasses.dataclass(frozen=True)
class _Config:
    """A validated, signed configuration for `private.update_deployment` (all None: unchanged)."""

    text: str | None = None
    missing: list[str] | None = None
    signature: bytes | None = None
    secrets: dict[str, str] = dataclasses.field(default_factory=dict)


async def _revalidate(
    conn: psycopg.AsyncConnection,
    current: dict[str, Any],
    patch: DeploymentPatch,
    signer: DeploymentSigner,
    user_id: uuid.UUID,
    rules: ConfigRules,
) -> _Config:
    """The new or the stored configuration validated (and signed) again, or an unchanged one.

    Activating (resuming a paused deployment or one in `error`, or finishing a configuring one)
    needs the stored configuration validated again, like a new one."""
    activating = patch.status == "active" and current["status"] in (
        DeploymentStatus.PAUSED.value,
        DeploymentStatus.CONFIGURING.value,
        DeploymentStatus.ERROR.value,
    )
    if patch.config is None and not activating:
        return _Config()
    schema = current["config_schema"]
    if schema is None:
        raise Conflict("This agent left the catalog: the deployment can be paused or deleted.")
    deployment_id = current["id"]
    stored = await _secret_hints(conn, [deployment_id])
    # A stored knowledge base is not refused again (the cap may have been lowered since).
    kb_cap = rules.max_knowledge_base_bytes if patch.config is not None else None
    validated = configschema.validate_config(
        schema,
        patch.config if patch.config is not None else current["config"],
        defaults=current["default_config"] if patch.config is not None else None,
        keep_secrets=stored.get(deployment_id, {}).keys(),
        partial=True,
        allow_http_urls=rules.allow_http_urls,
        max_knowledge_base_bytes=kb_cap,
    )
    text = config_text(validated.public)
    missing = list(validated.missing_required)
    signature = await signer.sign("update", user_id, deployment_id, text, missing)
    return _Config(text, missing, signature, validated.secrets)


async def update_deployment(
    *,
    db: CallerSession,
    deployment_id: uuid.UUID,
    patch: DeploymentPatch,
    box: SecretBox,
    signer: DeploymentSigner,
    user_id: uuid.UUID,
    rules: ConfigRules,
) -> Deployment:
    """Rename, reconfigure (secrets left out keep their value), pause or resume.

    A new `config` replaces the non-secret configuration and is validated like a deploy. Without
    one, the stored configuration is only re-checked when resuming (to tell active from
    configuring); renaming and pausing never depend on the agent's current schema. The database
    derives the status from what we validated (and signed) and the status asked for, and counts
    every update against the deploy rate. `rules` are as for `deploy_agent`.
    """
    conn = await db.conn()
    current = await _load(conn, deployment_id)
    config = await _revalidate(conn, current, patch, signer, user_id, rules)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("deployment_update"),
            {
                "id": deployment_id,
                "name": patch.name,
                "config": config.text,
                "missing": config.missing,
                "signature": config.signature,
                "status": patch.status,
            },
        )
        updated = await cur.fetchone()
    if updated is None or updated["id"] is None:
        raise DeploymentNotFound()
    await _store_secrets(conn, box, deployment_id, config.secrets)
    return await _deployment_of(conn, deployment_id)


async def delete_deployment(*, db: CallerSession, deployment_id: uuid.UUID) -> None:
    """Soft-delete the deployment and destroy its stored secrets."""
    conn = await db.conn()
    async with conn.cursor() as cur:
        await cur.execute(query("deployment_delete"), {"id": deployment_id})
        row = await cur.fetchone()
    if not row or not row[0]:
        raise DeploymentNotFound()
