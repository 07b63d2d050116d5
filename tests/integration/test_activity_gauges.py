"""`marketplace_agents_active` and `marketplace_conversations_active`: sampled by the worker from
the database on its timer (never per scrape), counting deployments whose status is active and
conversations with a message in the last `active_conversation_minutes`; the worker's pool gauges
come from the pool itself."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentmarket.core import metrics
from agentmarket.core.config import get_settings
from agentmarket.ops.tokens import ensure_user
from tests.integration.test_worker_relay import Model, until
from workers.chat_worker import ChatWorker
from workers.config import WorkerConfig

pytestmark = pytest.mark.db


def deploy(conn: psycopg.Connection, user_id: uuid.UUID, status: str) -> uuid.UUID:
    row = conn.execute(
        "insert into public.agent_deployments (user_id, agent_id, name, status)"
        " select %s, id, 'gauge', %s from public.marketplace_agents where slug = 'sql-sidekick'"
        " returning id",
        (user_id, status),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def converse(
    conn: psycopg.Connection, deployment: uuid.UUID, user_id: uuid.UUID, minutes_ago: int | None
) -> None:
    conn.execute(
        "insert into public.agent_conversations (deployment_id, user_id, last_message_at)"
        " values (%s, %s, now() - make_interval(mins => %s))",
        (deployment, user_id, minutes_ago),
    )


def gauges() -> tuple[float, float]:
    return metrics.AGENTS_ACTIVE._value.get(), metrics.CONVERSATIONS_ACTIVE._value.get()


async def test_the_worker_samples_active_agents_and_conversations(
    db_url: str, conn: psycopg.Connection
) -> None:
    settings = get_settings(app_env="test", database_url=db_url)
    config = WorkerConfig(poll_interval=3600, queue_depth_interval=0.05)
    worker = ChatWorker(settings, config=config, llm=Model())  # type: ignore[arg-type]
    user = ensure_user(conn, email=f"{uuid.uuid4().hex[:8]}@example.com")
    first = deploy(conn, user.id, "active")
    second = deploy(conn, user.id, "active")
    deploy(conn, user.id, "paused")
    deploy(conn, user.id, "configuring")
    converse(conn, first, user.id, 1)  # active: a message a minute ago
    converse(conn, second, user.id, 14)
    converse(conn, second, user.id, 16)  # older than the 15-minute window
    converse(conn, first, user.id, None)  # never a message
    metrics.AGENTS_ACTIVE.set(-1)
    metrics.CONVERSATIONS_ACTIVE.set(-1)
    running = asyncio.create_task(worker.run())
    try:
        await until(lambda: gauges() == (2, 2))
        conn.execute(
            "update public.agent_deployments set status = 'paused' where id = %s", (second,)
        )
        await until(lambda: gauges() == (1, 2))
        # What a worker's /metrics shows: the sampled values and its own pool's gauges.
        registry = metrics.worker_registry(metrics.PoolCollector("worker", worker.pool.get_stats))
        samples = {
            sample.name: sample
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for sample in family.samples
        }
    finally:
        worker.stop()
        await running
    assert samples["marketplace_agents_active"].value == 1
    assert samples["marketplace_conversations_active"].value == 2
    assert samples["db_pool_max_connections"].labels == {"pool": "worker"}
    assert samples["db_pool_max_connections"].value == worker.pool.max_size
    assert samples["db_pool_requests_waiting"].value == 0
    assert "http_request_duration_seconds_count" not in samples


async def test_a_scrape_reads_the_last_sample_not_the_database(
    db_url: str, conn: psycopg.Connection
) -> None:
    settings = get_settings(app_env="test", database_url=db_url)
    config = WorkerConfig(poll_interval=3600, queue_depth_interval=3600)  # one sample, at start
    worker = ChatWorker(settings, config=config, llm=Model())  # type: ignore[arg-type]
    user = ensure_user(conn, email=f"{uuid.uuid4().hex[:8]}@example.com")
    deploy(conn, user.id, "active")
    metrics.AGENTS_ACTIVE.set(-1)
    running = asyncio.create_task(worker.run())
    try:
        await until(lambda: gauges()[0] == 1)
        deploy(conn, user.id, "active")
        await asyncio.sleep(0.3)
        text = generate_latest(metrics.worker_registry()).decode()
    finally:
        worker.stop()
        await running
    assert "marketplace_agents_active 1.0" in text  # the second deployment waits for a tick
