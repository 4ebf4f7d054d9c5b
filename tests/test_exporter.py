"""The queue exporter against a real redis-server holding hundreds of jobs: exact numbers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from redis_consumer.metrics import exporter
from redis_consumer.queue import keys
from redis_consumer.queue.broker import Broker
from tests.helpers.net import free_port, wait_for_port

CREATED_AGE = 120.0  # seconds: how old the oldest waiting job of "segmentation" is


def _job(rds, key: str, created: datetime) -> None:
    rds.hset(key, mapping={"status": "new", "created_at": created.isoformat(), "input_file_name": "x.tif"})


def _populate(rds) -> dict[str, dict[str, int]]:
    """Queues with waiting, in-flight (live and dead workers) and dead jobs; returns the truth."""
    now = datetime.now(UTC)
    truth = {}
    # segmentation: 300 waiting, 3 live workers with 40 + 35 + 25 in flight, 1 dead worker with 10, 17 dead
    q = "segmentation"
    for i in range(400):
        # LPUSH order: job 0 is pushed first, so it is the oldest and sits at the right end
        key = f"{q}:img{i}.tif:{i:032x}"
        _job(rds, key, now - timedelta(seconds=CREATED_AGE) + timedelta(milliseconds=i))
        rds.lpush(q, key)
    held = {"w-live-1": 40, "w-live-2": 35, "w-live-3": 25, "w-dead-1": 10}
    for cid, n in held.items():
        broker = Broker(rds, q, cid, heartbeat_ttl=30.0)
        broker.heartbeat()
        for _ in range(n):
            assert broker.pop(0.1) is not None
    rds.zadd(keys.consumers(q), {"w-dead-1": time.time() - 100})  # heartbeat expired, not yet reaped
    for i in range(17):
        rds.lpush(keys.dead(q), f"{q}:dead{i}")
    truth[q] = {"waiting": 290, "in_flight": 110, "dead": 17, "consumers": 3}
    # segmentation-zip: 5 waiting, nothing else; registered by a worker with no jobs
    q = "segmentation-zip"
    for i in range(5):
        key = f"{q}:a{i}.zip:{i:032x}"
        _job(rds, key, now - timedelta(seconds=10))
        rds.lpush(q, key)
    Broker(rds, q, "zip-1", heartbeat_ttl=30.0).heartbeat()
    truth[q] = {"waiting": 5, "in_flight": 0, "dead": 0, "consumers": 1}
    # classify: empty queue, 2 in flight, 250 dead, no live worker
    q = "classify"
    broker = Broker(rds, q, "c-1", heartbeat_ttl=30.0)
    broker.heartbeat()
    for i in range(2):
        rds.lpush(q, f"{q}:x{i}")
        broker.pop(0.1)
    rds.zadd(keys.consumers(q), {"c-1": time.time() - 5})
    rds.lpush(keys.dead(q), *[f"{q}:d{i}" for i in range(250)])
    truth[q] = {"waiting": 0, "in_flight": 2, "dead": 250, "consumers": 0}
    # noise the exporter must not touch: thousands of unrelated job hashes
    pipe = rds.pipeline(transaction=False)
    for i in range(3000):
        pipe.hset(f"segmentation:done{i}", mapping={"status": "done"})
    pipe.execute()
    return truth


def test_snapshot_exact_numbers_with_discovery(rds):
    truth = _populate(rds)
    stats = {s.queue: s for s in exporter.snapshot(rds)}
    assert set(stats) == set(truth)  # discovered from the `queues` set the workers registered in
    for q, want in truth.items():
        s = stats[q]
        assert (s.waiting, s.in_flight, s.dead, s.consumers) == (
            want["waiting"], want["in_flight"], want["dead"], want["consumers"]), q
        assert s.items == want["waiting"] + want["in_flight"]
    # the oldest waiting job of segmentation is job 110 (jobs 0-109 were claimed from the right)
    assert CREATED_AGE - 0.11 - 5 <= stats["segmentation"].oldest_age <= CREATED_AGE + 5
    assert stats["classify"].oldest_age == 0.0
    assert 5 <= stats["segmentation-zip"].oldest_age <= 20


def test_snapshot_never_scans_the_keyspace(rds):
    _populate(rds)
    rds.config_resetstat()
    exporter.snapshot(rds, ["segmentation", "classify"])
    info = rds.info("commandstats")
    assert not any(name in info for name in ("cmdstat_keys", "cmdstat_scan"))
    # two round trips: per queue 5 commands + TIME, per worker one LLEN, per oldest job one HMGET
    calls = sum(v["calls"] for k, v in info.items() if not k.startswith(("cmdstat_config", "cmdstat_info")))
    assert calls == 1 + 2 * 5 + (4 + 1) + 1, {k: v["calls"] for k, v in info.items()}


def test_explicit_queues_include_unregistered_ones(rds):
    _populate(rds)
    rds.lpush("never-registered", "a", "b")
    stats = {s.queue: s for s in exporter.snapshot(rds, ["never-registered", "classify"])}
    assert set(stats) == {"never-registered", "classify"}
    assert stats["never-registered"].waiting == 2 and stats["never-registered"].oldest_age == 0.0


def _scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_exporter_command_serves_exact_metrics(rds, redis_server, tmp_path):
    truth = _populate(rds)
    port = free_port()
    env = {"REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin", "LOG_LEVEL": "WARNING"}
    with open(tmp_path / "exporter.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "redis_consumer.cli.main", "exporter", "--port", str(port)],
                                env=env, stderr=log)
    try:
        wait_for_port(port)
        status, text = _scrape(port)
        assert status == 200
        samples = _samples(text)
        for q, want in truth.items():
            for field, metric in (("waiting", "waiting"), ("in_flight", "in_flight"), ("dead", "dead"),
                                  ("consumers", "consumers")):
                assert samples[f'redis_consumer_queue_{metric}{{queue="{q}"}}'] == want[field], (q, field)
            assert samples[f'redis_consumer_queue_items{{queue="{q}"}}'] == want["waiting"] + want["in_flight"]
        assert samples["redis_consumer_exporter_up"] == 1
        assert samples['redis_consumer_queue_oldest_job_age_seconds{queue="segmentation"}'] >= CREATED_AGE - 5
        assert _scrape(port, "/healthz")[0] == 200
        labels = {part.split("=", 1)[0] for name in samples if "{" in name
                  for part in name[name.index("{") + 1:-1].split(",")}
        assert labels == {"queue"}  # bounded labels only: never a job key
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_exporter_reports_down_when_redis_is_unreachable():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, socket_timeout=0.5,
                         retry=Retry(NoBackoff(), 0))
    routes = exporter.routes(client, ["segmentation"])
    status, _, body = routes["/metrics"]()
    assert status == 200 and "redis_consumer_exporter_up 0.0" in body.decode()
    assert routes["/healthz"]()[0] == 503


@pytest.mark.parametrize("created,expected", [(None, 0.0), ("not a date", 0.0)])
def test_age_tolerates_missing_or_bad_timestamps(created, expected):
    assert exporter._age(created, time.time()) == expected


def test_exporter_once_prints_one_scrape(rds, redis_server, monkeypatch, capsys):
    from redis_consumer.cli.main import main

    _populate(rds)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    assert main(["exporter", "--once", "--queues", "classify"]) == 0
    out = capsys.readouterr().out
    assert 'redis_consumer_queue_dead{queue="classify"} 250.0' in out
    assert 'queue="segmentation"' not in out


def test_exporter_rejects_a_bad_port(capsys):
    from redis_consumer.cli.main import main

    assert main(["exporter", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def test_a_stray_non_hash_key_does_not_blank_other_queues(rds):
    """A key that is not a hash at one queue's head must not fail the scrape of every queue."""
    rds.set("broken:bad:1", "not a hash")
    rds.lpush("broken", "broken:bad:1")
    _job(rds, "fine:1", datetime.now(UTC) - timedelta(seconds=50))
    rds.lpush("fine", "fine:1")
    stats = {s.queue: s for s in exporter.snapshot(rds, ["broken", "fine"])}
    assert stats["broken"].waiting == 1 and stats["broken"].oldest_age == 0.0
    assert stats["fine"].waiting == 1 and 45 < stats["fine"].oldest_age < 120


def test_age_of_a_requeued_job_counts_from_its_requeue(rds):
    """A job recovered or retried long after it was created has waited only since it was requeued."""
    _job(rds, "q:old", datetime.now(UTC) - timedelta(hours=2))
    rds.lpush("q", "q:old")
    b = Broker(rds, "q", "w", max_attempts=5)
    job = b.claim_next(1).job
    assert b.retry(job, "model server unavailable") == "requeued"
    (stat,) = exporter.snapshot(rds, ["q"])
    assert stat.waiting == 1 and stat.oldest_age < 60
