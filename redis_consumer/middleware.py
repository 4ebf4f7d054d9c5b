"""Hooks the worker calls at each event of a job's life (Dramatiq-style middleware).

Metrics, tracing or audit logging plug in here without the worker knowing about them. Every
hook is optional; a failing hook is logged and never breaks the job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any


class Middleware:
    """Base class: override the hooks you need."""

    #: False when no hook would run (an empty chain): callers may skip building the arguments.
    active = True

    def worker_started(self, worker: Any) -> None:
        """The worker is about to claim its first job."""

    def worker_stopped(self, worker: Any) -> None:
        """The worker has released everything and is exiting."""

    def job_claimed(self, queue: str, key: str, wait_seconds: float | None) -> None:
        """A job was claimed; `wait_seconds` is the time since `created_at` when known."""

    def job_finished(
        self, queue: str, key: str, status: str, failure_type: str | None, timings: Mapping[str, float]
    ) -> None:
        """A job ended `done` or `failed`; `timings` maps stage (and `total`) to seconds."""

    def job_requeued(self, queue: str, key: str, outcome: str) -> None:
        """A job was handed back (`released`, `requeued`, `dead`)."""

    def jobs_recovered(self, queue: str, recovered: int, dead_lettered: int) -> None:
        """The reaper returned dead workers' jobs to the queue."""

    def heartbeat(self, queue: str, ok: bool) -> None:
        """A heartbeat was attempted."""

    def model_wait(self, queue: str, reason: str | None, seconds: float) -> None:
        """The worker is not claiming because its model server is unreachable (`reason`), or has
        stopped waiting (`reason` None); `seconds` waited since the previous call."""


class MiddlewareChain(Middleware):
    """Calls every middleware in order, isolating their failures."""

    def __init__(self, items: list[Middleware] | None = None) -> None:
        self.items = list(items or [])

    def add(self, item: Middleware) -> None:
        self.items.append(item)

    @property
    def active(self) -> bool:  # type: ignore[override]
        return bool(self.items)

    def _call(self, name: str, *args: Any) -> None:
        for item in self.items:
            try:
                getattr(item, name)(*args)
            except Exception:
                logging.getLogger(__name__).exception("middleware %s.%s failed", type(item).__name__, name)

    def worker_started(self, worker):
        self._call("worker_started", worker)

    def worker_stopped(self, worker):
        self._call("worker_stopped", worker)

    def job_claimed(self, queue, key, wait_seconds):
        self._call("job_claimed", queue, key, wait_seconds)

    def job_finished(self, queue, key, status, failure_type, timings):
        self._call("job_finished", queue, key, status, failure_type, timings)

    def job_requeued(self, queue, key, outcome):
        self._call("job_requeued", queue, key, outcome)

    def jobs_recovered(self, queue, recovered, dead_lettered):
        self._call("jobs_recovered", queue, recovered, dead_lettered)

    def heartbeat(self, queue, ok):
        self._call("heartbeat", queue, ok)

    def model_wait(self, queue, reason, seconds):
        self._call("model_wait", queue, reason, seconds)
