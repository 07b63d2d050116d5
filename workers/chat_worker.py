"""The chat worker's loop (docs/architecture.md#worker): listen, claim, drain.

* A NOTIFY on `CHAT_JOBS` wakes the loop at once (one reconnecting `Listener`, which also wakes it
  after every (re)connect to catch up); polling every `poll_interval` covers a missed notification
  and reclaims expired leases (docs/architecture.md#queue-and-leases). A NOTIFY on `CHAT_CANCEL`
  tells the running job writing that reply to stop.
* Claims go through `JobStore.claim` (SKIP LOCKED, lease), up to the free concurrency; each claimed
  job runs in its own task (`workers.job.JobRunner`). The loop claims only when there may be
  something to claim: at start and after the listener (re)connects, on a NOTIFY, when the last
  claim filled its limit with more jobs waiting (`Claim.more`), and every `poll_interval`; a job
  ending alone does not claim again when the queue was empty. Once LISTEN is in place (its
  connect itself triggers a claim), a job enqueued after a claim found nothing wakes the loop.
  The queue gauges and the marketplace gauges (active agents and conversations) are sampled on
  a timer, never per scrape or per claim.
* The replies' text goes out through one `Flusher` (workers/relay.py) for all running jobs.
* SIGTERM (`stop`): stop claiming, let running jobs finish for `grace_seconds`, then cancel the
  rest, which hand their jobs back.
* A database outage stops nothing (docs/operations.md#database-outages): a failed claim backs off
  (doubling from `poll_interval` up to `max_claim_backoff`), the listener reconnects by itself and
  then has the pool replace its broken connections and the loop claim at once, and a job that
  lost the database hands itself back (workers.job).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from agentmarket.core import metrics
from agentmarket.core.config import Settings
from agentmarket.db.channels import CHAT_CANCEL, CHAT_JOBS
from agentmarket.db.listen import Listener
from agentmarket.db.pool import connect_timeout, create_worker_pool, refresh_soon
from agentmarket.domain.secrets import SecretBox
from agentmarket.llm.client import FallbackModel, LLMClient
from workers.config import WorkerConfig
from workers.context import ModelDefaults
from workers.job import JobRunner
from workers.lease import JobSignals
from workers.relay import Flusher
from workers.store import Job, JobStore

__all__ = ["ChatWorker", "WorkerConfig", "fallback_model"]

log = structlog.get_logger("agentmarket.worker")


def fallback_model(settings: Settings) -> FallbackModel | None:
    """The fallback model (OPENAI_FALLBACK_*), or None when it is off: no OPENAI_FALLBACK_MODEL,
    or no key for it. The platform key (OPENAI_API_KEY) stands in only when the fallback is on
    the same provider (no OPENAI_FALLBACK_BASE_URL): it is never sent to another one."""
    model = settings.openai_fallback_model
    if not model:
        return None
    key = settings.openai_fallback_api_key or (
        settings.openai_api_key if settings.openai_fallback_base_url is None else None
    )
    if key is None:
        log.warning("worker.fallback_off", reason="OPENAI_FALLBACK_API_KEY is not set")
        return None
    return FallbackModel(
        model=model,
        base_url=settings.openai_fallback_base_url or settings.openai_base_url,
        api_key=key.get_secret_value(),
    )


@dataclass
class Running:
    job: Job
    signals: JobSignals = field(default_factory=JobSignals)
    task: asyncio.Task[None] | None = None


class ChatWorker:
    def __init__(
        self,
        settings: Settings,
        *,
        config: WorkerConfig | None = None,
        llm: LLMClient | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or WorkerConfig()
        self.llm = llm or LLMClient(
            base_url=settings.openai_base_url,
            platform_api_key=(
                settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
            ),
            timeout=settings.openai_timeout_seconds,
            http_backend=settings.openai_http_backend,
            fallback=fallback_model(settings),
        )
        # The worker's own service login (WORKER_DATABASE_URL: acts as service_role, not a
        # superuser), a session connection: lease-holding claims need one.
        self.pool: AsyncConnectionPool = create_worker_pool(
            settings,
            # Database work per reply is a few short statements: a modest pool serves many
            # concurrent replies (and leaves connections for everyone else).
            min_size=min(4, self.config.concurrency),
            max_size=min(self.config.concurrency + 2, 24),
        )
        self.store = JobStore(
            self.pool,
            worker_id=self.config.worker_id,
            lease_seconds=self.config.lease_seconds,
            history_limit=self.config.history_messages,
        )
        self.flusher = Flusher.from_config(self.store, self.config)
        self.runner = JobRunner(
            self.store,
            self.llm,
            SecretBox(settings.encryption_keys),
            config=self.config,
            defaults=ModelDefaults(settings.openai_model, settings.openai_max_tokens),
            flusher=self.flusher,
        )
        self.listener = Listener(
            settings.worker_url,
            [CHAT_JOBS, CHAT_CANCEL],
            on_notify=self._notified,
            on_connect=self._listening,
            application_name="agentmarket-worker-listen",
            connect_timeout=connect_timeout(settings),
        )
        self.running: dict[int, Running] = {}
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # Whether a claim may find something: set at start, by a NOTIFY, a (re)connect or a
        # claim that filled its limit with more waiting; cleared by each claim.
        self._maybe_more = True
        self._claim_failures = 0  # consecutive failed claims (the database is away)

    def stop(self) -> None:
        """Stop claiming; running jobs finish (or are released after the grace period)."""
        self._stopping.set()
        self._wake.set()

    def _claim_soon(self) -> None:
        self._maybe_more = True
        self._wake.set()

    def _listening(self, reconnected: bool) -> None:
        """LISTEN is in place: catch up on anything enqueued while we were not listening. After
        a loss the database is back: replace the pool's broken connections and claim at once."""
        if reconnected:
            refresh_soon(self.pool)
            self._claim_failures = 0
        self._claim_soon()

    def _claim_backoff(self) -> float:
        """How long after a failed claim the next one waits: doubling up to max_claim_backoff."""
        exponent = min(self._claim_failures - 1, 8)
        backoff: float = self.config.poll_interval * 2.0**exponent
        return min(backoff, self.config.max_claim_backoff)

    async def run(self) -> None:
        # Not waiting for the connections: a worker started while the database is away runs its
        # loop (backing off) until it is back.
        await self.pool.open(wait=False)
        # Claim at once, without waiting for LISTEN: its (re)connect wakes the loop anyway.
        await self.listener.start(wait=0)
        sampler = asyncio.create_task(self._sample_queue_depth(), name="queue-depth")
        log.info(
            "worker.started", worker_id=self.config.worker_id, concurrency=self.config.concurrency
        )
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        try:
            while not self._stopping.is_set():
                # Clear before claiming: a NOTIFY that arrives during the claim wakes us again.
                self._wake.clear()
                free = self.config.concurrency - len(self.running)
                if free > 0 and (self._maybe_more or loop.time() >= next_poll):
                    next_poll = loop.time() + self.config.poll_interval
                    if not await self._claim(free):
                        next_poll = loop.time() + self._claim_backoff()
                # No free slot: only a job ending (or a stop) can make the loop claim again.
                full = len(self.running) >= self.config.concurrency
                timeout = None if full else max(next_poll - loop.time(), 0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            await self.listener.aclose()
            await self._drain()
            await self.flusher.aclose()
            await self.llm.aclose()
            await self.pool.close()
            log.info("worker.stopped", worker_id=self.config.worker_id)

    async def _drain(self) -> None:
        """Running jobs get `grace_seconds` to finish; the rest hand their jobs back."""
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.running.clear()

    def _notified(self, channel: str, payload: str) -> None:
        if channel == CHAT_CANCEL:
            self._cancel(payload)
        else:
            self._claim_soon()

    def _cancel(self, payload: str) -> None:
        with contextlib.suppress(ValueError):
            message_id = uuid.UUID(payload)
            for running in self.running.values():
                if running.job.message_id == message_id:
                    running.signals.cancel.set()

    async def _sample_queue_depth(self) -> None:
        """The queue gauges (depth, the oldest claimable job's wait) and the marketplace gauges
        (deployments active, conversations active), every `queue_depth_interval` seconds (a claim
        stays one statement; a scrape reads the last sample); then the admin analytics' change
        rows folded into their cells (docs/operations.md#analytics)."""
        while True:
            try:
                sample = await self.store.queue_sample()
                metrics.QUEUE_DEPTH.set(sample.depth)
                metrics.QUEUE_OLDEST.set(sample.oldest_seconds)
                agents, conversations = await self.store.activity_sample(
                    self.config.active_conversation_minutes
                )
                metrics.AGENTS_ACTIVE.set(agents)
                metrics.CONVERSATIONS_ACTIVE.set(conversations)
            except psycopg.Error as exc:
                log.warning("worker.queue_depth_failed", error=type(exc).__name__)
            try:
                await self.store.fold_analytics()
            except psycopg.Error as exc:
                log.warning("worker.analytics_fold_failed", error=type(exc).__name__)
            await asyncio.sleep(self.config.queue_depth_interval)

    async def _claim(self, limit: int) -> bool:
        """Claim up to `limit` jobs and start them; a NOTIFY during the claim keeps
        `_maybe_more` set. False when the claim failed."""
        self._maybe_more = False
        try:
            # The jobs answered here are never taken over by this worker's own claim, even when a
            # stall let their lease lapse: their attempts extend it at their next round.
            claim = await self.store.claim(limit, running=list(self.running))
        except psycopg.Error as exc:
            self._claim_failures += 1
            log.warning(
                "worker.claim_failed", error=type(exc).__name__, failures=self._claim_failures
            )
            return False  # the next poll (backing off) tries again
        self._claim_failures = 0
        if claim.more:
            self._maybe_more = True
        for job in claim.jobs:
            lag = job.pickup_seconds
            if lag is not None:
                metrics.QUEUE_PICKUP.observe(max(lag, 0.0))
            stale = self.running.get(job.id)
            if stale is not None:
                # Not expected (the claim spares the jobs running here), but should it happen,
                # the attempt still running is no longer the job's and stops.
                stale.signals.lost.set()
            running = Running(job)
            self.running[job.id] = running
            running.task = asyncio.create_task(self._run(running), name=f"job-{job.id}")
        return True

    async def _run(self, running: Running) -> None:
        try:
            await self.runner.run(running.job, running.signals)
        finally:
            if self.running.get(running.job.id) is running:
                del self.running[running.job.id]
            self._wake.set()
