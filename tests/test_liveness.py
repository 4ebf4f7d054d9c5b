"""Issue 17 item 7: a SIGKILLed worker's job re-runs within ~10 s with the DEFAULT liveness
settings, and the shorter HEARTBEAT_TTL does not make a Redis outage look like dead workers.

Real worker processes against a real redis-server. The bound is relative to the settings
(`HEARTBEAT_TTL + 2 x HEARTBEAT_INTERVAL` + slack for process start and one claim), read from
`Settings` defaults, not hard-coded: expiry after at most one TTL, one reaper run per interval
per queue, and an idle worker blocked in BLMOVE picks the requeued key up at once.
"""

from __future__ import annotations

import signal
import time

import pytest

from redis_consumer.queue import keys
from redis_consumer.settings import Settings
from redis_consumer.utils.timestamps import parse_iso
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer, env_for
from tests.helpers.workers import start_worker

pytestmark = pytest.mark.timeout(120)

DEFAULTS = Settings.from_env({})
INTERVAL, TTL = DEFAULTS.HEARTBEAT_INTERVAL, DEFAULTS.HEARTBEAT_TTL


def _env(server, **extra):
    settings = {"QUEUE": "q", "CONSUMER_TYPE": "tests.consumers_for_tests:RecordingConsumer",
                "EMPTY_QUEUE_TIMEOUT": "0.5", "RETRY_BACKOFF_CAP": "0.2"}
    settings.update(extra)
    env = env_for(server, **settings)
    for name in ("HEARTBEAT_INTERVAL", "HEARTBEAT_TTL"):  # the defaults under test, whatever the caller set
        if name not in extra:
            env.pop(name, None)
    return env


def _push(r, key, **fields):
    r.hset(key, mapping={"status": "new", **{k: str(v) for k, v in fields.items()}})
    r.lpush("q", key)


def test_defaults_rerun_a_sigkilled_workers_job_within_ten_seconds():
    assert TTL + INTERVAL <= 10  # the target, from the defaults themselves
    assert TTL >= 3 * INTERVAL  # two lost heartbeats in a row never make a live worker dead


def test_a_sigkilled_workers_job_reruns_within_ttl_plus_two_intervals(rds, redis_server, procs, tmp_path):
    _push(rds, "q:slow", sleep=60, sleep_attempts=1)
    a = start_worker(_env(redis_server), str(tmp_path / "a.log"))
    procs.append(a)
    wait_until(lambda: rds.hget("q:slow", "status") == "predicting", timeout=30, message="job to start")
    b = start_worker(_env(redis_server), str(tmp_path / "b.log"))
    procs.append(b)
    wait_until(lambda: rds.zcard(keys.consumers("q")) == 2, timeout=30, message="the second worker's heartbeat")
    a.send_signal(signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: rds.hget("q:slow", "status") == "done", timeout=TTL + 2 * INTERVAL + 30, message="recovery")
    data = rds.hgetall("q:slow")
    rerun_after = parse_iso(data["started_at"]).timestamp() - killed_at
    print(f"re-run {rerun_after:.2f} s after SIGKILL (HEARTBEAT_INTERVAL={INTERVAL:g}, HEARTBEAT_TTL={TTL:g})")
    assert rerun_after <= TTL + 2 * INTERVAL + 1.0, rerun_after
    assert data["attempts"] == "2"
    assert rds.get("test:results:q:slow") == "1"


def test_a_redis_outage_longer_than_the_ttl_reaps_no_live_worker(procs, tmp_path):
    """Every worker's score lapses while Redis is down for longer than HEARTBEAT_TTL; the first
    worker back must not reap the others (they beat again within an interval), so each job runs
    once and keeps its first attempt."""
    interval, ttl = 0.5, 2.0
    server = RedisServer(appendonly=True).start()
    try:
        r = server.client()
        jobs = [f"q:long{i}" for i in range(3)]
        for k in jobs:
            _push(r, k, sleep=ttl * 4)
        env = _env(server, HEARTBEAT_INTERVAL=str(interval), HEARTBEAT_TTL=str(ttl), REDIS_TIMEOUT="1")
        procs.extend(start_worker(env, str(tmp_path / f"w{i}.log")) for i in range(3))
        wait_until(lambda: [r.hget(k, "status") for k in jobs] == ["predicting"] * 3, timeout=30,
                   message="three jobs running")
        server.kill()
        time.sleep(ttl * 2)  # every heartbeat score is now in the past
        server.start()
        r = server.client()
        wait_until(lambda: [r.hget(k, "status") for k in jobs] == ["done"] * 3, timeout=60, message="jobs done")
        assert [r.hget(k, "attempts") for k in jobs] == ["1"] * 3
        assert [r.get(f"test:executions:{k}") for k in jobs] == ["1"] * 3  # nobody re-ran a live job
        assert all(p.poll() is None for p in procs)
    finally:
        server.cleanup()
