"""The worker process: `agentmarket worker` runs `run` (entry point `agentmarket.apps:worker`).

With `processes` > 1 this process only supervises: it starts that many worker processes (the
multiprocessing "spawn" context: fresh interpreters, nothing inherited but the settings), each a
full `ChatWorker` with its own pool and its own LISTEN connection; it forwards SIGTERM/SIGINT to
them, waits for them to drain, and fails if any of them failed (docs/operations.md)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import signal
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog
from prometheus_client import start_http_server

from agentmarket.core import loops, sentry
from agentmarket.core.config import AppEnv, Settings
from agentmarket.core.logging import configure_logging
from agentmarket.core.metrics import PoolCollector, worker_registry
from agentmarket.llm.client import LLMError
from workers.chat_worker import ChatWorker, WorkerConfig

__all__ = ["run"]

log = structlog.get_logger("agentmarket.worker")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(
    settings: Settings,
    *,
    concurrency: int,
    lease_seconds: int,
    grace_seconds: float,
    processes: int = 1,
) -> int:
    """Serve the worker's metrics (WORKER_METRICS_PORT) and consume chat jobs until SIGTERM/SIGINT,
    then drain (running replies get `grace_seconds`). Returns the exit status."""
    config = WorkerConfig(
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        grace_seconds=grace_seconds,
        test_faults=settings.app_env is AppEnv.TEST,
    )
    if processes <= 1:
        _work(settings, config, 0)
        return 0
    return _Supervisor(settings, config, processes).run()


def _work(settings: Settings, config: WorkerConfig, index: int) -> None:
    """One worker process. Process `index` serves its metrics on WORKER_METRICS_PORT + index."""
    configure_logging(settings.log_level)
    # Only with SENTRY_DSN; a model failure after its retries is an outcome, not an event.
    sentry.init_sentry(settings, process="worker", expected=(LLMError,))
    registry = worker_registry()
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port + index, addr="127.0.0.1", registry=registry)

    async def main() -> None:
        worker = ChatWorker(settings, config=config)
        registry.register(PoolCollector("worker", worker.pool.get_stats))
        loop = asyncio.get_running_loop()
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, worker.stop)
        log.info("worker.loop", loop=loops.running_loop_name(), process=index)
        # What exists now (modules, the SDK, the worker) lives as long as the process: out of the
        # collector's sight, so a full collection scans only what the jobs made since, as the
        # API does (functions/app.py, docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        await worker.run()

    try:
        loops.run(main())
    finally:
        sentry.flush()


def _child(settings: Settings, config: WorkerConfig, index: int) -> None:
    # A fresh worker id: the parent's default one was made in the parent (its pid).
    config.worker_id = WorkerConfig().worker_id
    _work(settings, config, index)


class _Supervisor:
    """The parent of `processes` worker processes."""

    def __init__(self, settings: Settings, config: WorkerConfig, processes: int) -> None:
        self.settings = settings
        self.config = config
        self.processes = processes
        self.children: list[BaseProcess] = []
        self.stopping = False

    def stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """Forward the stop to every child still running (SIGTERM: each drains as a single
        worker does)."""
        self.stopping = True
        for child in self.children:
            if child.exitcode is None and child.pid is not None:
                child.terminate()

    def run(self) -> int:
        configure_logging(self.settings.log_level)
        context = multiprocessing.get_context("spawn")
        previous = {sig: signal.signal(sig, self.stop) for sig in _STOP_SIGNALS}
        try:
            for index in range(self.processes):
                child = context.Process(
                    target=_child,
                    args=(self.settings, self.config, index),
                    name=f"agentmarket-worker-{index}",
                )
                child.start()
                self.children.append(child)
                if self.stopping:  # a signal arrived while they were starting
                    child.terminate()
            log.info(
                "worker.supervisor.started",
                processes=self.processes,
                pids=[c.pid for c in self.children],
            )
            failed = self._wait_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("worker.supervisor.stopped", failed=failed)
        return 1 if failed else 0

    def _wait_all(self) -> int:
        """Wait for every child; one that exits on its own stops the others (the supervisor
        restarts the whole set). Returns how many failed. A child killed by the SIGTERM it was
        sent while still starting (before it handles signals, so before it claimed anything)
        stopped cleanly."""
        failed = 0
        running = list(self.children)
        while running:
            ready = wait([c.sentinel for c in running])
            for child in [c for c in running if c.sentinel in ready]:
                child.join()
                running.remove(child)
                code = child.exitcode
                clean = code == 0 or (self.stopping and code in (-signal.SIGTERM, -signal.SIGINT))
                log.info("worker.process.exited", pid=child.pid, exitcode=code)
                if not clean:
                    failed += 1
                if not self.stopping:
                    log.warning("worker.process.lost", pid=child.pid, exitcode=code)
                    self.stop()
        return failed
