"""Prometheus metrics (names from the product plan, underscores for dots).

prometheus-client keeps metrics in its process-wide default registry by design; each process
(functions instance, worker) exposes its own on /metrics.
"""

from __future__ import annotations

from prometheus_client import Counter

DEPLOYMENTS = Counter(
    "marketplace_deployments",
    "Deploy requests by outcome.",
    ["result"],
)
