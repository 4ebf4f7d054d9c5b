"""The queue exporter: per-queue depth for dashboards and the HPA, in two Redis round trips.

One scrape costs O(queues + workers), never O(job hashes): no KEYS, no SCAN. Round trip one
reads, per queue, LLEN of the queue and its dead letters, the consumer ids in
`consumers:{queue}` (all of them: a dead worker's jobs are still in flight until reaped), the
live-consumer count and the oldest waiting key; round trip two reads LLEN of each processing
list and the oldest job's `created_at`. Time comes from Redis (`TIME`), not the local clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis

from ..queue import keys
from ..utils.timestamps import age_seconds
from . import PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueStats:
    """What one scrape knows about one queue."""

    queue: str
    waiting: int
    in_flight: int
    dead: int
    oldest_age: float
    consumers: int

    @property
    def items(self) -> int:
        """The HPA's signal: jobs not finished yet (waiting or being worked on)."""
        return self.waiting + self.in_flight


def _age(created: str | None, now: float) -> float:
    return age_seconds(created, now) or 0.0


def discover(client: redis.Redis) -> list[str]:
    """Queue names registered by workers in the `queues` set."""
    return sorted(_text(q) for q in client.smembers(keys.QUEUES_SET))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def snapshot(client: redis.Redis, queues: Sequence[str] | None = None) -> list[QueueStats]:
    """Read every queue's numbers (queues from the argument or the `queues` set)."""
    names = list(queues) if queues else discover(client)
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for q in names:
        pipe.llen(q)
        pipe.llen(keys.dead(q))
        pipe.zrange(keys.consumers(q), 0, -1)
        pipe.lindex(q, -1)  # the producer LPUSHes, workers claim from the right: -1 is the oldest
    first = pipe.execute()
    seconds, micros = first[0]
    now = int(seconds) + int(micros) / 1e6
    rows = [first[1 + 4 * i: 5 + 4 * i] for i in range(len(names))]

    pipe = client.pipeline(transaction=False)
    for q, (_, _, ids, oldest) in zip(names, rows):
        pipe.zcount(keys.consumers(q), now, "+inf")
        for cid in ids:
            pipe.llen(keys.processing(q, _text(cid)))
        if oldest is not None:
            pipe.hmget(_text(oldest), "queued_at", "created_at", "updated_at")
    # a stray non-hash key at a queue's head must not blank out every queue's metrics
    second = iter(pipe.execute(raise_on_error=False))

    stats = []
    for q, (waiting, dead, ids, oldest) in zip(names, rows):
        live = int(next(second))
        in_flight = sum(int(next(second)) for _ in ids)
        age = 0.0
        if oldest is not None:
            stamps = next(second)
            if not isinstance(stamps, Exception):
                # requeued jobs (recovered, retried, zip parents back for fan-in) carry `queued_at`
                stamp = next((s for s in stamps if s), None)
                age = _age(_text(stamp) if stamp else None, now)
        stats.append(QueueStats(q, int(waiting), in_flight, int(dead), age, live))
    return stats


class QueueCollector:
    """A prometheus_client collector that runs one `snapshot` per scrape."""

    def __init__(self, client: redis.Redis, queues: Iterable[str] | None = None) -> None:
        self.client = client
        self.queues = [q for q in (queues or []) if q]

    def describe(self) -> list:
        return []  # metrics depend on the scrape; do not collect at registration time

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        p = PREFIX
        started = time.perf_counter()
        up = GaugeMetricFamily(f"{p}_exporter_up", "1 when the last scrape read Redis successfully.")
        duration = GaugeMetricFamily(f"{p}_exporter_scrape_duration_seconds", "Seconds the last scrape took.")
        try:
            stats = snapshot(self.client, self.queues)
        except redis.RedisError as exc:
            log.warning("scrape failed: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        families = {
            "waiting": GaugeMetricFamily(f"{p}_queue_waiting", "Jobs waiting in the queue.", labels=["queue"]),
            "in_flight": GaugeMetricFamily(f"{p}_queue_in_flight", "Jobs claimed by workers (processing lists).",
                                           labels=["queue"]),
            "dead": GaugeMetricFamily(f"{p}_queue_dead", "Jobs in the dead-letter list.", labels=["queue"]),
            "oldest_age": GaugeMetricFamily(f"{p}_queue_oldest_job_age_seconds",
                                            "Age of the oldest waiting job (0 when none wait).", labels=["queue"]),
            "consumers": GaugeMetricFamily(f"{p}_queue_consumers", "Workers with a fresh heartbeat.",
                                           labels=["queue"]),
            "items": GaugeMetricFamily(f"{p}_queue_items", "Waiting plus in-flight jobs: the autoscaling signal.",
                                       labels=["queue"]),
        }
        for s in stats:
            for name, family in families.items():
                family.add_metric([s.queue], getattr(s, name))
        yield from families.values()
        up.add_metric([], 1)
        duration.add_metric([], time.perf_counter() - started)
        yield up
        yield duration


def routes(client: redis.Redis, queues: Iterable[str] | None = None) -> dict:
    """HTTP routes of the exporter: /metrics and /healthz (Redis reachable)."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
    )

    from .http import TEXT

    registry = CollectorRegistry()
    registry.register(QueueCollector(client, queues))

    def healthz():
        try:
            client.ping()
            return 200, TEXT, b"ok\n"
        except redis.RedisError as exc:
            return 503, TEXT, f"redis unreachable ({type(exc).__name__})\n".encode()

    return {"/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)), "/healthz": healthz,
            "/readyz": healthz}
