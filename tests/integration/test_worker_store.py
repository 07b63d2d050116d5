"""The worker's job store against the migrated database, as the worker's own login: typed rows
from every statement, the lease fencing, and the reply's event written with its finish."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.config import get_settings
from agentmarket.domain.agents import KnowledgeEntry, Turn
from agentmarket.ops.tokens import ensure_user
from workers.context import knowledge_question
from workers.store import Job, JobStore, Outcome, Piece, QueueSample, ReplyEvent

pytestmark = pytest.mark.db

KNOWLEDGE = [
    {"title": "Rate limits", "content": "Each key may send 60 requests a minute."},
    {"title": "Pagination", "content": "Lists return a cursor for the next page."},
]


def queue_reply(conn: psycopg.Connection, *, slug: str, config: dict[str, object]) -> uuid.UUID:
    """A deployment of agent `slug` with a sealed key, a question, and its queued reply."""
    user = ensure_user(conn, email=f"{uuid.uuid4().hex[:8]}@example.com")
    with conn.transaction():
        row = conn.execute(
            "insert into public.agent_deployments (user_id, agent_id, name, status, config)"
            " select %s, id, 'store', 'active', %s from public.marketplace_agents where slug = %s"
            " returning id",
            (user.id, Jsonb(config), slug),
        ).fetchone()
        assert row is not None
        deployment = row[0]
        conn.execute(
            "insert into private.deployment_secrets"
            " (deployment_id, field, key_id, ciphertext, hint)"
            " values (%s, 'openai_api_key', 'k1', %s, 'sk-…abcd')",
            (deployment, b"\x01" * 40),
        )
        row = conn.execute(
            "insert into public.agent_conversations (deployment_id, user_id)"
            " values (%s, %s) returning id",
            (deployment, user.id),
        ).fetchone()
        assert row is not None
        conversation = row[0]
        previous = None
        turns = [("user", "hello"), ("assistant", "hi!"), ("user", "what are the rate limits?")]
        for age, (role, content) in zip([3, 2, 1], turns, strict=True):
            row = conn.execute(
                "insert into public.agent_messages (conversation_id, user_id, role, content,"
                " status, reply_to, created_at, completed_at)"
                " values (%(c)s, %(u)s, %(role)s, %(content)s, 'completed', %(to)s,"
                " now() - make_interval(secs => %(age)s), now() - make_interval(secs => %(age)s))"
                " returning id",
                {
                    "c": conversation,
                    "u": user.id,
                    "role": role,
                    "content": content,
                    "to": previous if role == "assistant" else None,
                    "age": age,
                },
            ).fetchone()
            assert row is not None
            previous = row[0]
        row = conn.execute(
            "insert into public.agent_messages"
            " (conversation_id, user_id, role, status, reply_to)"
            " values (%s, %s, 'assistant', 'queued', %s) returning id",
            (conversation, user.id, previous),
        ).fetchone()
        assert row is not None
        reply: uuid.UUID = row[0]
        conn.execute(
            "insert into private.chat_jobs (message_id, trace_id) values (%s, 'req-1')", (reply,)
        )
    return reply


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    settings = get_settings(app_env="test", database_url=db_url)
    async with AsyncConnectionPool(
        settings.worker_url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False
    ) as opened:
        yield opened


async def test_a_job_from_claim_to_finish(
    conn: psycopg.Connection, pool: AsyncConnectionPool
) -> None:
    reply = queue_reply(conn, slug="api-docs-concierge", config={"knowledge_base": KNOWLEDGE})
    store = JobStore(pool, worker_id="w-1", lease_seconds=30)
    waiting = await store.queue_sample()
    assert waiting.depth == 1 and waiting.oldest_seconds >= 0

    claim = await store.claim(5)
    assert claim.more is False  # fewer than asked for: nothing more is waiting
    [job] = claim.jobs
    assert (job.message_id, job.attempts, job.trace_id) == (reply, 1, "req-1")
    assert job.pickup_seconds is not None and job.pickup_seconds >= 0
    assert await store.queue_sample() == QueueSample(0, 0.0)
    assert job.loaded is not None and job.loaded.knowledge == []  # loaded by the claim
    loaded = await store.load_context(job, knowledge_limit=1, knowledge_for=knowledge_question)
    assert loaded is not None
    context = loaded.context
    assert (context.message_id, context.kind, context.agent_slug) == (
        reply,
        "support",
        "api-docs-concierge",
    )
    assert context.requires_user_key is True and context.deleted_at is None
    assert loaded.history == [
        Turn("user", "hello"),
        Turn("assistant", "hi!"),
        Turn("user", "what are the rate limits?"),
    ]
    assert [(s.field, s.key_id, bytes(s.ciphertext)) for s in loaded.secrets] == [
        ("openai_api_key", "k1", b"\x01" * 40)
    ]
    assert loaded.knowledge == [KnowledgeEntry(**KNOWLEDGE[0])]

    assert (await store.extend_lease(job.id)).owned is True
    assert await store.append_batch([Piece(job.id, 0, "Sixty ")]) == {job.id: 6}
    await store.reset(job.id)
    assert await store.append_batch([Piece(job.id, 0, "60 a "), Piece(job.id, 5, "minute.")]) == {
        job.id: 12
    }
    event = ReplyEvent(
        "agent.chat.response.received",
        context.user_id,
        context.agent_id,
        context.deployment_id,
        {"message_id": str(reply), "status": "completed"},
    )
    outcome = Outcome("completed", 40, content="60 a minute.", model="m", ttft_ms=5)
    assert await store.finish(job.id, outcome, event) is True

    message = conn.execute(
        "select status, content, model, ttft_ms, latency_ms, truncated"
        " from public.agent_messages where id = %s",
        (reply,),
    ).fetchone()
    assert message == ("completed", "60 a minute.", "m", 5, 40, False)
    tracked = conn.execute(
        "select name, user_id, properties ->> 'status' from private.telemetry_events"
        " where deployment_id = %s",
        (context.deployment_id,),
    ).fetchall()
    assert tracked == [("agent.chat.response.received", context.user_id, "completed")]
    # The job is no longer ours: nothing more is written.
    assert (await store.extend_lease(job.id)).owned is False
    assert await store.append_batch([Piece(job.id, 12, "late")]) == {job.id: None}
    assert await store.finish(job.id, outcome, event) is False
    assert await store.release(job.id) is False


async def test_the_worker_login_folds_the_finished_replies_into_the_metrics_cells(
    conn: psycopg.Connection, pool: AsyncConnectionPool
) -> None:
    """A finish leaves a change row (the history's earlier reply left one too), not a cell update;
    the worker's login folds them in, and the reports' views read the same before and after."""
    queue_reply(conn, slug="api-docs-concierge", config={"knowledge_base": KNOWLEDGE})
    store = JobStore(pool, worker_id="w-1", lease_seconds=30)
    [job] = (await store.claim(1)).jobs
    outcome = Outcome("completed", 40, content="60 a minute.", model="m", ttft_ms=5)
    assert await store.finish(job.id, outcome, None) is True

    agent = conn.execute(
        "select agent_id from private.analytics_replies where message_id = %s", (job.message_id,)
    ).fetchone()
    assert agent is not None
    changes = "select count(*) from private.analytics_reply_changes"
    hourly = "select count(*) from private.analytics_hourly_changes"
    hourly_row = conn.execute(hourly).fetchone()
    assert hourly_row is not None and hourly_row[0] > 0  # the sends' (and the deployment's)
    day = (
        "select sum(replies)::int, sum(completed)::int from private.analytics_reply_days"
        " where agent_id = %s having count(*) > 0"
    )
    day_cells = day.replace("analytics_reply_days", "analytics_reply_day_cells")
    assert conn.execute(changes).fetchone() == (2,)
    assert conn.execute(day, agent).fetchone() == (2, 2)
    assert conn.execute(day_cells, agent).fetchone() is None
    assert await store.fold_analytics() == 2 + hourly_row[0]
    assert conn.execute(changes).fetchone() == (0,) == conn.execute(hourly).fetchone()
    assert conn.execute(day_cells, agent).fetchone() == (2, 2)
    assert conn.execute(day, agent).fetchone() == (2, 2)


async def test_a_released_job_is_queued_again(
    conn: psycopg.Connection, pool: AsyncConnectionPool
) -> None:
    reply = queue_reply(conn, slug="api-docs-concierge", config={})
    store = JobStore(pool, worker_id="w-1", lease_seconds=30)
    [job] = (await store.claim(1)).jobs

    assert await store.release(job.id) is True

    claim = await JobStore(pool, worker_id="w-2", lease_seconds=30).claim(1)
    [again] = claim.jobs
    assert claim.more is False  # a full claim, and nothing else is waiting
    assert (again.message_id, again.attempts) == (reply, 1)  # a release costs no attempt
    assert again.pickup_seconds is not None


async def test_a_claim_loads_the_most_recent_turns_up_to_its_history_limit(
    conn: psycopg.Connection, pool: AsyncConnectionPool
) -> None:
    reply = queue_reply(conn, slug="sql-sidekick", config={})
    store = JobStore(pool, worker_id="w-1", lease_seconds=30, history_limit=2)

    [job] = (await store.claim(1)).jobs

    assert job.loaded is not None
    assert job.loaded.context.message_id == reply
    assert job.loaded.history == [
        Turn("assistant", "hi!"),
        Turn("user", "what are the rate limits?"),
    ]
    # A chat agent searches no knowledge base: the claim's load is all there is.
    loaded = await store.load_context(job, knowledge_limit=1, knowledge_for=knowledge_question)
    assert loaded == job.loaded


async def test_the_reply_of_a_deleted_conversation_loads_nothing(
    conn: psycopg.Connection, pool: AsyncConnectionPool
) -> None:
    queue_reply(conn, slug="api-docs-concierge", config={})
    store = JobStore(pool, worker_id="w-1", lease_seconds=30)
    conn.execute("delete from public.agent_conversations")  # its job goes with it

    assert (await store.claim(1)).jobs == []
    # Deleted while being claimed: the claim found no reply to load.
    job = Job(1, uuid.uuid4(), 1, datetime.now(UTC), None, None, loaded=None)
    loaded = await store.load_context(job, knowledge_limit=1, knowledge_for=knowledge_question)

    assert loaded is None
