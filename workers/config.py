"""The worker's tunables (docs/architecture.md#worker)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

__all__ = ["WorkerConfig"]


@dataclass
class WorkerConfig:
    concurrency: int = 8
    lease_seconds: int = 30
    poll_interval: float = 1.0
    # After failed claims (the database is away) the next waits poll_interval, doubling, up to this.
    max_claim_backoff: float = 5.0
    grace_seconds: float = 20.0
    history_messages: int = 20
    history_chars: int = 24_000
    knowledge_entries: int = 4
    # The relay's tick (workers/relay.py): a reply's first text waits at most first_flush_delay,
    # later text flush_interval, stretched by flush_interval_per_reply per active reply up to
    # max_flush_interval; pending text goes in pieces of at most flush_chars. first_flush_delay is
    # added to every streamed reply's time to first token; 2 ms still lets a reply that arrives in
    # one burst finish unappended (docs/benchmarks.md, "Chat pipeline against a naive proxy").
    first_flush_delay: float = 0.002
    flush_interval: float = 0.1
    flush_interval_per_reply: float = 0.004
    max_flush_interval: float = 0.5
    flush_chars: int = 1_500
    # How often the queue-depth gauge is sampled (one count, not one per claim), and with it the
    # marketplace gauges (active deployments; conversations with a message in the last
    # active_conversation_minutes).
    queue_depth_interval: float = 5.0
    active_conversation_minutes: int = 15
    # Forced faults (agentmarket.core.faults): APP_ENV=test only.
    test_faults: bool = False
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
