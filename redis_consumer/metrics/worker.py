"""Worker metrics as middleware, plus the /metrics, /healthz and /readyz server.

Every metric has a `queue` label and only bounded labels (status, stage, outcome, gRPC method
and code): never a job key. Each `WorkerMetrics` owns its own registry so several workers in
one process (tests) do not collide.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from .. import __version__
from ..middleware import Middleware
from . import PREFIX
from .http import TEXT, HTTPServer

log = logging.getLogger(__name__)

#: Seconds: jobs run from milliseconds (noop) to an hour (large zips).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
GRPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FINAL = ("done", "failed")


def uses_tfserving(consumer: Any) -> bool:
    """Whether the consumer talks to TF Serving (readiness then checks the model server)."""
    if getattr(consumer, "uses_tfserving", False):
        return True
    return any(cls.__name__ == "TensorFlowServingConsumer" for cls in type(consumer).__mro__)


class WorkerMetrics(Middleware):
    """Counts and times what the worker does; all metric names start with `redis_consumer_`."""

    def __init__(self, registry: CollectorRegistry | None = None, process_metrics: bool = True) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = PREFIX
        if process_metrics:
            ProcessCollector(registry=r)
        self.info = Gauge(f"{p}_worker_info", "Static facts about this worker (value 1).",
                          ["queue", "consumer_type", "version"], registry=r)
        self.jobs = Counter(f"{p}_jobs", "Jobs that reached a final status.", ["queue", "status"], registry=r)
        self.failures = Counter(f"{p}_job_failures", "Failed jobs by failure type (user or system).",
                                ["queue", "failure_type"], registry=r)
        self.claimed = Counter(f"{p}_jobs_claimed", "Jobs claimed from the queue.", ["queue"], registry=r)
        self.requeued = Counter(f"{p}_jobs_requeued", "Jobs handed back: released, requeued (retry) or dead.",
                                ["queue", "outcome"], registry=r)
        self.recovered = Counter(f"{p}_jobs_recovered", "Jobs of dead workers returned to the queue by the reaper.",
                                 ["queue"], registry=r)
        self.dead_lettered = Counter(f"{p}_jobs_dead_lettered",
                                     "Jobs the reaper moved to the dead-letter list (attempts exhausted).",
                                     ["queue"], registry=r)
        self.in_progress = Gauge(f"{p}_jobs_in_progress", "Jobs this worker is processing now.", ["queue"], registry=r)
        self.stage = Histogram(f"{p}_stage_duration_seconds", "Seconds spent in each job stage (and `total`).",
                               ["queue", "stage"], buckets=DURATION_BUCKETS, registry=r)
        self.wait = Histogram(f"{p}_queue_wait_seconds", "Seconds from a job's created_at to its claim.",
                              ["queue"], buckets=WAIT_BUCKETS, registry=r)
        self.heartbeats = Counter(f"{p}_heartbeats", "Heartbeat attempts by result.", ["queue", "result"], registry=r)
        self.last_heartbeat = Gauge(f"{p}_last_heartbeat_timestamp_seconds",
                                    "Unix time of the last successful heartbeat.", ["queue"], registry=r)
        self.grpc_calls = Counter(f"{p}_grpc_calls", "gRPC calls to TF Serving by method and status code.",
                                  ["queue", "method", "code"], registry=r)
        self.grpc_latency = Histogram(f"{p}_grpc_call_duration_seconds", "Latency of gRPC calls to TF Serving.",
                                      ["queue", "method"], buckets=GRPC_BUCKETS, registry=r)
        self.waiting_for_model = Gauge(f"{p}_waiting_for_model",
                                       "1 while this worker does not claim because TF Serving is unreachable.",
                                       ["queue"], registry=r)
        self.model_wait_seconds = Counter(f"{p}_model_wait_seconds",
                                          "Seconds spent not claiming while TF Serving was unreachable.",
                                          ["queue"], registry=r)
        self.queue = ""
        self._grpc_registered = False
        #: (metric, label values) -> its child: `labels()` takes a lock and builds a key per call,
        #: and the per-job hooks would call it several times a job (labels are bounded, see above)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        child = self._children.get((metric, values))
        if child is None:
            child = self._children[(metric, values)] = metric.labels(*values)
        return child

    # -- middleware hooks --------------------------------------------------------------------
    def worker_started(self, worker: Any) -> None:
        self.bind(worker.queue, getattr(worker.consumer, "name", type(worker.consumer).__name__))
        self.in_progress.labels(worker.queue).set_function(lambda: 1.0 if worker.current is not None else 0.0)
        self.waiting_for_model.labels(worker.queue).set_function(
            lambda: 1.0 if getattr(worker, "model_wait", None) else 0.0)
        if uses_tfserving(worker.consumer) or "redis_consumer.tfserving.client" in sys.modules:
            self.register_grpc_observer()

    def worker_stopped(self, worker: Any) -> None:
        self.unregister_grpc_observer()

    def bind(self, queue: str, consumer_type: str) -> None:
        """Create this worker's series up front so dashboards see zeros, not gaps."""
        self.queue = queue
        self.info.labels(queue, consumer_type, __version__).set(1)
        for status in FINAL:
            self.jobs.labels(queue, status)
        for failure in ("user", "system"):
            self.failures.labels(queue, failure)
        for outcome in ("released", "requeued", "dead"):
            self.requeued.labels(queue, outcome)
        self.claimed.labels(queue)
        self.recovered.labels(queue)
        self.dead_lettered.labels(queue)
        self.in_progress.labels(queue).set(0)
        self.waiting_for_model.labels(queue).set(0)
        self.model_wait_seconds.labels(queue)

    def job_claimed(self, queue: str, key: str, wait_seconds: float | None) -> None:
        self._child(self.claimed, queue).inc()
        if wait_seconds is not None:
            self._child(self.wait, queue).observe(wait_seconds)

    def job_finished(
        self, queue: str, key: str, status: str, failure_type: str | None, timings: Mapping[str, float]
    ) -> None:
        status = status if status in FINAL else "other"
        self._child(self.jobs, queue, status).inc()
        if status == "failed":
            self._child(self.failures, queue, failure_type if failure_type in ("user", "system") else "system").inc()
        for stage, seconds in timings.items():
            self._child(self.stage, queue, stage).observe(seconds)

    def job_requeued(self, queue: str, key: str, outcome: str) -> None:
        self.requeued.labels(queue, outcome if outcome in ("released", "requeued", "dead") else "other").inc()

    def jobs_recovered(self, queue: str, recovered: int, dead_lettered: int) -> None:
        self.recovered.labels(queue).inc(recovered)
        self.dead_lettered.labels(queue).inc(dead_lettered)

    def heartbeat(self, queue: str, ok: bool) -> None:
        self.heartbeats.labels(queue, "ok" if ok else "error").inc()
        if ok:
            self.last_heartbeat.labels(queue).set(time.time())

    def model_wait(self, queue: str, reason: str | None, seconds: float) -> None:
        # the gauge reads the worker's own state (set_function in worker_started)
        if seconds > 0:
            self.model_wait_seconds.labels(queue).inc(seconds)

    # -- gRPC ----------------------------------------------------------------------------------
    def observe_grpc(self, method: str, code: str, seconds: float) -> None:
        """A `CALL_OBSERVERS` callback of the TF Serving client."""
        method = str(method).rsplit("/", 1)[-1]
        code = getattr(code, "name", str(code))
        self.grpc_calls.labels(self.queue, method, code).inc()
        self.grpc_latency.labels(self.queue, method).observe(seconds)

    def register_grpc_observer(self) -> bool:
        try:
            from ..tfserving import client as tf_client
        except ImportError:
            return False
        observers = getattr(tf_client, "CALL_OBSERVERS", None)
        if observers is None or self.observe_grpc in observers:
            return False
        observers.append(self.observe_grpc)
        self._grpc_registered = True
        return True

    def unregister_grpc_observer(self) -> None:
        if not self._grpc_registered:
            return
        tf_client = sys.modules.get("redis_consumer.tfserving.client")
        observers = getattr(tf_client, "CALL_OBSERVERS", None)
        if observers is not None and self.observe_grpc in observers:
            observers.remove(self.observe_grpc)
        self._grpc_registered = False

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthChecks:
    """/healthz and /readyz answers for one worker."""

    def __init__(self, worker: Any, tf_timeout: float = 1.0) -> None:
        self.worker = worker
        self.tf_timeout = tf_timeout
        self.started = time.monotonic()

    def live(self) -> tuple[bool, str]:
        """Alive while the supervisor keeps heartbeating: its last attempt is younger than HEARTBEAT_TTL.

        A Redis outage makes heartbeats fail, not stop: that is /readyz's business. Failing
        liveness for it would have Kubernetes restart every worker during a Redis blip.
        Before the first attempt the process gets one HEARTBEAT_TTL of grace.
        """
        ttl = self.worker.settings.HEARTBEAT_TTL
        now = time.monotonic()
        attempted = getattr(self.worker, "last_heartbeat_attempt", 0.0) or self.started
        age = now - attempted
        if age >= ttl:
            return False, f"heartbeat stalled: last attempt {age:.1f}s ago (HEARTBEAT_TTL={ttl:g}s)\n"
        ok = self.worker.last_heartbeat_ok
        if ok and now - ok < ttl:
            return True, f"ok: heartbeat {now - ok:.1f}s ago\n"
        return True, "alive: heartbeats are failing (redis unreachable, see /readyz)\n"

    def ready(self) -> tuple[bool, str]:
        """Ready when not shutting down, Redis answers PING and (if used) TF Serving is up."""
        if self.worker.stopping.is_set():
            return False, "shutting down\n"
        waiting = getattr(self.worker, "model_wait", None)
        if waiting:
            return False, f"waiting for TensorFlow Serving, not claiming: {waiting}\n"
        try:
            self.worker.redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return False, f"redis unreachable ({type(exc).__name__})\n"
        if uses_tfserving(self.worker.consumer):
            ok, detail = tfserving_ready(self.worker.settings, self.tf_timeout)
            if not ok:
                return False, f"tensorflow serving unreachable at {detail}\n"
        return True, "ok\n"


def tfserving_ready(settings: Any, timeout: float = 1.0) -> tuple[bool, str]:
    """Whether TF Serving accepts connections, asked through the project's client."""
    target = f"{settings.TF_HOST}:{settings.TF_PORT}"
    try:
        from ..tfserving.client import get_client

        return bool(get_client(settings).ready(timeout)), target
    except Exception:  # noqa: BLE001 - unreachable, timed out or misconfigured: not ready
        return False, target


def serve(worker: Any, metrics: WorkerMetrics, port: int, host: str = "") -> HTTPServer:
    """Start the worker's /metrics, /healthz and /readyz server on a daemon thread."""
    checks = HealthChecks(worker)

    def probe(check):
        def route():
            ok, text = check()
            return (200 if ok else 503), TEXT, text.encode()
        return route

    routes = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, metrics.render()),
        "/healthz": probe(checks.live),
        "/readyz": probe(checks.ready),
    }
    server = HTTPServer(routes, port, host).start()
    log.info("metrics on :%d (/metrics, /healthz, /readyz)", server.port)
    return server


class MetricsServerMiddleware(Middleware):
    """Owns the HTTP server: `attach(worker)` starts it, the worker's stop ends it.

    The server starts as soon as the worker is built (before Redis answers), so the liveness
    probe sees a live process while the worker waits out a Redis outage.
    """

    def __init__(self, metrics: WorkerMetrics, port: int, host: str = "") -> None:
        self.metrics = metrics
        self.port = port
        self.host = host
        self.server: HTTPServer | None = None

    def attach(self, worker: Any) -> HTTPServer:
        if self.server is None:
            self.server = serve(worker, self.metrics, self.port, self.host)
        return self.server

    def worker_started(self, worker: Any) -> None:
        self.attach(worker)

    def worker_stopped(self, worker: Any) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def middleware_for(settings: Any) -> list[Middleware]:
    """The metrics middleware for `settings` (empty when METRICS_PORT is 0)."""
    if not settings.METRICS_PORT:
        return []
    metrics = WorkerMetrics()
    return [metrics, MetricsServerMiddleware(metrics, settings.METRICS_PORT)]


def attach(worker: Any, items: list[Middleware]) -> None:
    """Start the HTTP server of any `MetricsServerMiddleware` in `items` for `worker`.

    A port already in use becomes a `ConfigError` naming METRICS_PORT.
    """
    from ..errors import ConfigError

    for item in items:
        if isinstance(item, MetricsServerMiddleware):
            try:
                item.attach(worker)
            except OSError as exc:
                raise ConfigError(f"METRICS_PORT {item.port} cannot be served ({exc.strerror or exc})") from None
