"""Prometheus metrics (names from the product plan, underscores for dots).

prometheus-client keeps metrics in its process-wide default registry by design; each process
(functions instance, worker) exposes its own on /metrics, and only the series it records:
`api_registry()` leaves out the worker's, `worker_registry()` the functions'. A connection pool's
gauges come from `PoolCollector`, which reads the pool's in-memory stats at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "AGENTS_ACTIVE",
    "CHAT_ERRORS",
    "CHAT_MESSAGES",
    "CHAT_RESPONSE_TIME",
    "CHAT_TOKENS",
    "CHAT_TTFT",
    "CONVERSATIONS_ACTIVE",
    "DEPLOYMENTS",
    "HTTP_REQUEST_DURATION",
    "MODEL_ATTEMPTS",
    "MODEL_FALLBACKS",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST",
    "QUEUE_PICKUP",
    "RATE_LIMIT_REJECTIONS",
    "PoolCollector",
    "api_registry",
    "worker_registry",
]

DEPLOYMENTS = Counter(
    "marketplace_deployments",
    "Deploy requests by outcome.",
    ["result"],
)

CHAT_RESPONSE_TIME = Histogram(
    "agent_chat_response_time_seconds",
    "Time from the worker picking up a message to the finished reply.",
    buckets=(0.5, 1, 2, 5),
)
CHAT_TTFT = Histogram(
    "agent_chat_ttft_seconds",
    "Time from pickup to the first token of the reply.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
CHAT_TOKENS = Counter("agent_chat_token_usage", "Model tokens used, by kind.", ["kind"])
CHAT_ERRORS = Counter("agent_chat_errors", "Failed replies by error type.", ["error_type"])
CHAT_MESSAGES = Counter("agent_chat_messages", "Chat messages accepted, by mode.", ["mode"])
QUEUE_DEPTH = Gauge("agent_chat_queue_depth", "Chat jobs waiting to be claimed.")
QUEUE_OLDEST = Gauge(
    "agent_chat_queue_oldest_seconds",
    "How long the oldest claimable chat job has waited (0 when none).",
)
MODEL_ATTEMPTS = Counter(
    "agent_model_attempts",
    "Model calls (each attempt, retries included) by outcome: ok, retrying (failed, retried), "
    "failed (the call ends with a model error), error (an unexpected one), cancelled.",
    ["outcome"],
)
MODEL_FALLBACKS = Counter(
    "agent_model_fallbacks",
    "Replies handed to the fallback model after the primary's retries failed, by outcome: ok, "
    "failed (the fallback failed too), cancelled, error (an unexpected one).",
    ["outcome"],
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP requests by route template, method and status; time to the response's start (a "
    "stream's duration is not included).",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_PICKUP = Histogram(
    "agent_chat_queue_pickup_seconds",
    "Time from enqueue to a worker claiming the job (first attempts).",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5),
)
RATE_LIMIT_REJECTIONS = Counter(
    "ratelimit_rejections",
    "Requests refused by a limit (docs/api.md#limits), by limit.",
    ["limit"],
)

AGENTS_ACTIVE = Gauge(
    "marketplace_agents_active",
    "Deployed agents in service (deployments whose status is active), sampled by the worker.",
)
CONVERSATIONS_ACTIVE = Gauge(
    "marketplace_conversations_active",
    "Conversations with a message in the last active_conversation_minutes (worker setting, "
    "default 15), sampled by the worker.",
)


class PoolCollector(Collector):
    """A psycopg pool's gauges, read from its in-memory `get_stats()` at scrape time (no
    database work): connections in use and idle, requests waiting for one, the pool's maximum.
    `stats` is the pool's `get_stats` (any callable returning that mapping)."""

    def __init__(self, pool: str, stats: Callable[[], Mapping[str, int]]) -> None:
        self._pool = pool
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        values = (
            (
                "db_pool_connections_in_use",
                "Pool connections lent out (or being set up).",
                size - idle,
            ),
            ("db_pool_connections_idle", "Pool connections idle in the pool.", idle),
            (
                "db_pool_requests_waiting",
                "Requests waiting for a pool connection.",
                stats.get("requests_waiting", 0),
            ),
            ("db_pool_max_connections", "The pool's maximum size.", stats.get("pool_max", 0)),
        )
        for name, documentation, value in values:
            family = GaugeMetricFamily(name, documentation, labels=["pool"])
            family.add_metric([self._pool], max(value, 0))
            yield family


class _Without(Collector):
    """The default registry without some metrics' families: what one kind of process exposes."""

    def __init__(self, hidden: Iterable[MetricWrapperBase]) -> None:
        self._hidden = frozenset(family.name for metric in hidden for family in metric.describe())

    def collect(self) -> Iterator[Metric]:
        return (family for family in REGISTRY.collect() if family.name not in self._hidden)


# Recorded only by the workers / only by the functions.
_WORKER_ONLY = (
    CHAT_RESPONSE_TIME,
    CHAT_TTFT,
    CHAT_TOKENS,
    CHAT_ERRORS,
    QUEUE_DEPTH,
    QUEUE_OLDEST,
    QUEUE_PICKUP,
    MODEL_ATTEMPTS,
    AGENTS_ACTIVE,
    CONVERSATIONS_ACTIVE,
    MODEL_FALLBACKS,
)
_API_ONLY = (DEPLOYMENTS, CHAT_MESSAGES, RATE_LIMIT_REJECTIONS, HTTP_REQUEST_DURATION)


def _exposed(hidden: Iterable[MetricWrapperBase], extra: Iterable[Collector]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Without(hidden))
    for collector in extra:
        registry.register(collector)
    return registry


def api_registry(*extra: Collector) -> CollectorRegistry:
    """What a functions process exposes on GET /metrics: everything but the worker's series
    (plus `extra` collectors, e.g. its pool's)."""
    return _exposed(_WORKER_ONLY, extra)


def worker_registry(*extra: Collector) -> CollectorRegistry:
    """What a worker process exposes on WORKER_METRICS_PORT: everything but the functions'
    (plus `extra` collectors; more can be registered later)."""
    return _exposed(_API_ONLY, extra)
