"""The worker process: `agentmarket worker` runs `run` (entry point `agentmarket.apps:worker`)."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from agentmarket.core.config import Settings
from agentmarket.core.logging import configure_logging
from workers.chat_worker import ChatWorker, WorkerConfig

__all__ = ["run"]


def run(settings: Settings, *, concurrency: int, lease_seconds: int, grace_seconds: float) -> None:
    """Serve the worker's metrics (WORKER_METRICS_PORT) and consume chat jobs until SIGTERM/SIGINT,
    then drain (running replies get `grace_seconds`)."""
    configure_logging(settings.log_level)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    config = WorkerConfig(
        concurrency=concurrency, lease_seconds=lease_seconds, grace_seconds=grace_seconds
    )

    async def main() -> None:
        worker = ChatWorker(settings, config=config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(main())
