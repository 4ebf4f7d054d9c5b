"""Jobs and brokers for the tests of claiming ahead and of batches (queue `q`, short jobs)."""

from __future__ import annotations

from typing import Any

import redis

from redis_consumer.queue.broker import Broker
from tests.helpers.redis_server import RedisServer, env_for

#: liveness of the real worker processes these tests start and kill
INTERVAL, TTL = 0.5, 2.0


def make_job(r: redis.Redis, key: str, **fields: str) -> None:
    """A new job hash pushed onto queue `q` (its oldest end is the first pushed)."""
    r.hset(key, mapping={"status": "new", "input_file_name": "in.tif", **fields})
    r.lpush("q", key)


def short_job_broker(r: redis.Redis, cid: str, **limits: Any) -> Broker:
    """A broker of queue `q` that always claims on at a final write, with `limits` set on it
    (claim_ahead, claim_batch, claim_ahead_max_seconds) as the worker sets them."""
    b = Broker(r, "q", cid, max_attempts=3, expire_time=100, heartbeat_ttl=30)
    b.prefetch = lambda: True
    for name, value in limits.items():
        setattr(b, name, value)
    return b


def short_job_worker_env(server: RedisServer, **settings: str) -> dict[str, str]:
    """A worker of queue `q` running the tests' RecordingConsumer with fast liveness, plus `settings`."""
    base = {"QUEUE": "q", "CONSUMER_TYPE": "tests.consumers_for_tests:RecordingConsumer",
            "HEARTBEAT_INTERVAL": str(INTERVAL), "HEARTBEAT_TTL": str(TTL), "EMPTY_QUEUE_TIMEOUT": "0.5",
            "RETRY_BACKOFF_CAP": "0.2"}
    return env_for(server, **{**base, **settings})
