"""Prometheus metrics: worker middleware + health server, and the queue exporter.

Nothing here is imported by the worker unless `METRICS_PORT` is set, so `prometheus_client`
never slows a worker that does not export metrics. Import the submodules directly:
`metrics.worker` (middleware, /metrics /healthz /readyz) and `metrics.exporter` (queue depth).
"""

from __future__ import annotations

#: Every metric name starts with this (DESIGN.md "Metrics").
PREFIX = "redis_consumer"
