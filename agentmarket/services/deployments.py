"""Deploy an agent and manage deployments.

Reads run as the caller under RLS; writes go through private SECURITY DEFINER functions that check
`auth.uid()` themselves (clients cannot insert deployments directly: that would skip validation,
secret encryption and the cap). Another user's deployment is simply not found. Those functions
take no cap and no status from us: they read the cap from the database and accept a config only
with our signature over what we validated (`agentmarket.signing`), deriving the status from it.
"""

from __future__ import annotations

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
    InvalidConfig,
)
from agentmarket.core.metrics import DEPLOYMENTS
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

AGENT_FOR_DEPLOY = """
select id, slug, name, config_schema, default_config
  from public.marketplace_agents
 where (id = %(id)s or slug = %(slug)s) and is_published
"""

DEPLOYMENTS_WITH_AGENT = """
select d.id, d.agent_id, d.name, d.config, d.status, d.status_reason, d.created_at,
       d.updated_at, d.last_active_at,
       a.slug as agent_slug, a.name as agent_name, a.kind as agent_kind, a.icon as agent_icon,
       a.config_schema, a.default_config
  from public.agent_deployments d
  left join public.marketplace_agents a on a.id = d.agent_id
"""
LIST_DEPLOYMENTS = DEPLOYMENTS_WITH_AGENT + " order by d.created_at desc, d.id desc"
ONE_DEPLOYMENT = DEPLOYMENTS_WITH_AGENT + " where d.id = %(id)s"

SECRET_HINTS = "select deployment_id, field, hint from private.deployment_secret_hints(%s)"  # noqa: S105  # noqa: S105
CREATE = "select * from private.create_deployment(%s, %s, %s, %s, %s)"
UPDATE = "select * from private.update_deployment(%s, %s, %s, %s, %s, %s)"
DELETE = "select private.delete_deployment(%s)"
PUT_SECRET = "select private.put_deployment_secret(%s, %s, %s, %s, %s)"  # noqa: S105  # noqa: S105


async def _secret_hints(
    conn: psycopg.AsyncConnection, ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, str]]:
    hints: dict[uuid.UUID, dict[str, str]] = defaultdict(dict)
    if ids:
        async with conn.cursor() as cur:
            await cur.execute(SECRET_HINTS, (ids,))
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
            PUT_SECRET, (deployment_id, field, sealed.key_id, sealed.ciphertext, sealed.hint)
        )


async def _load(conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(ONE_DEPLOYMENT, {"id": deployment_id})
        row = await cur.fetchone()
    if row is None:
        raise DeploymentNotFound()
    return row


async def deploy_agent(
    *,
    conn: psycopg.AsyncConnection,
    request: DeployRequest,
    box: SecretBox,
    signer: DeploymentSigner,
    user_id: uuid.UUID,
    allow_http_urls: bool,
) -> Deployment:
    """Validate the config against the agent's schema, create the deployment, seal its secrets.

    `allow_http_urls` (the ALLOW_HTTP_URLS setting) lets `format: uri` fields hold http URLs."""
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(AGENT_FOR_DEPLOY, agent_key(request.agent_id))
            agent = await cur.fetchone()
        if agent is None:
            raise AgentNotFound()
        validated = configschema.validate_config(
            agent["config_schema"],
            request.config,
            defaults=agent["default_config"],
            partial=True,
            allow_http_urls=allow_http_urls,
        )
        text = config_text(validated.public)
        missing = list(validated.missing_required)
        signature = await signer.sign("create", user_id, agent["id"], text, missing)
        with app_errors():
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    CREATE,
                    (agent["id"], request.name or agent["name"], text, missing, signature),
                )
                created = await cur.fetchone()
        assert created is not None
        await _store_secrets(conn, box, created["id"], validated.secrets)
    except (AgentNotFound, InvalidConfig, DeploymentLimitReached) as exc:
        DEPLOYMENTS.labels(result=exc.code).inc()
        raise
    DEPLOYMENTS.labels(result="success").inc()
    await track(
        conn,
        "marketplace.agent.deployed",
        agent_id=agent["id"],
        deployment_id=created["id"],
        slug=agent["slug"],
        status=created["status"],
    )
    row = await _load(conn, created["id"])
    hints = await _secret_hints(conn, [created["id"]])
    return _deployment(row, hints.get(created["id"], {}))


async def list_deployments(*, conn: psycopg.AsyncConnection) -> DeploymentList:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(LIST_DEPLOYMENTS)
        rows = await cur.fetchall()
    hints = await _secret_hints(conn, [r["id"] for r in rows])
    return DeploymentList(data=[_deployment(r, hints.get(r["id"], {})) for r in rows])


async def get_deployment(*, conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> Deployment:
    row = await _load(conn, deployment_id)
    hints = await _secret_hints(conn, [deployment_id])
    return _deployment(row, hints.get(deployment_id, {}))


async def update_deployment(
    *,
    conn: psycopg.AsyncConnection,
    deployment_id: uuid.UUID,
    patch: DeploymentPatch,
    box: SecretBox,
    signer: DeploymentSigner,
    user_id: uuid.UUID,
    allow_http_urls: bool,
) -> Deployment:
    """Rename, reconfigure (secrets left out keep their value), pause or resume.

    A new `config` replaces the non-secret configuration and is validated like a deploy. Without
    one, the stored configuration is only re-checked when resuming (to tell active from
    configuring); renaming and pausing never depend on the agent's current schema. The database
    derives the status from what we validated (and signed) and the status asked for.
    `allow_http_urls` is as for `deploy_agent`.
    """
    current = await _load(conn, deployment_id)
    schema = current["config_schema"]
    # Activating (resuming a paused deployment, or finishing a configuring one) needs the
    # stored configuration validated again, like a new one.
    activating = patch.status == "active" and current["status"] in (
        DeploymentStatus.PAUSED.value,
        DeploymentStatus.CONFIGURING.value,
    )
    text: str | None = None
    missing: list[str] | None = None
    signature: bytes | None = None
    secrets: dict[str, str] = {}
    if patch.config is not None or activating:
        if schema is None:
            raise Conflict("This agent left the catalog: the deployment can be paused or deleted.")
        stored = await _secret_hints(conn, [deployment_id])
        validated = configschema.validate_config(
            schema,
            patch.config if patch.config is not None else current["config"],
            defaults=current["default_config"] if patch.config is not None else None,
            keep_secrets=stored.get(deployment_id, {}).keys(),
            partial=True,
            allow_http_urls=allow_http_urls,
        )
        secrets = validated.secrets
        text = config_text(validated.public)
        missing = list(validated.missing_required)
        signature = await signer.sign("update", user_id, deployment_id, text, missing)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            UPDATE, (deployment_id, patch.name, text, missing, signature, patch.status)
        )
        updated = await cur.fetchone()
    if updated is None or updated["id"] is None:
        raise DeploymentNotFound()
    await _store_secrets(conn, box, deployment_id, secrets)
    return await get_deployment(conn=conn, deployment_id=deployment_id)


async def delete_deployment(*, conn: psycopg.AsyncConnection, deployment_id: uuid.UUID) -> None:
    """Soft-delete the deployment and destroy its stored secrets."""
    async with conn.cursor() as cur:
        await cur.execute(DELETE, (deployment_id,))
        row = await cur.fetchone()
    if not row or not row[0]:
        raise DeploymentNotFound()
