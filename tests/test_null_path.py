"""The per-job fast paths of the worker keep their behaviour: the supervisor still times out a job
it did not wake for, script calls survive dropped connections and a flushed script cache, the
cached timestamp reads like `datetime.isoformat`, and fields decode as before."""

from __future__ import annotations

import gc
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from redis_consumer.consumers.base import Consumer
from redis_consumer.queue.broker import Broker, Claim, _decode_fields
from redis_consumer.settings import Settings
from redis_consumer.utils.timestamps import now_iso, parse_iso
from redis_consumer.worker import Worker


class _SlowConsumer(Consumer):
    def _consume(self, redis_hash):
        end = time.monotonic() + 40
        while time.monotonic() < end:
            time.sleep(0.01)
        return {}


def test_a_claim_due_before_the_supervisor_wakes_still_times_out(rds, redis_server):
    """The worker no longer wakes its supervisor after every job; a job whose JOB_TIMEOUT (1 s)
    ends long before the supervisor's next heartbeat (20 s) wakes it at the claim instead."""
    settings = Settings.from_env({}, REDIS_URL=redis_server.url, QUEUE="q", JOB_TIMEOUT=1.0, MAX_ATTEMPTS=1,
                                 HEARTBEAT_INTERVAL=20.0, HEARTBEAT_TTL=60.0, EMPTY_QUEUE_TIMEOUT=0.2)
    worker = Worker(settings, _SlowConsumer)
    worker._supervisor.start()
    deadline = time.monotonic() + 10
    while worker._sleep_until < time.monotonic() + 5 and time.monotonic() < deadline:
        time.sleep(0.01)  # the supervisor has beaten once and sleeps until its next beat
    assert worker._sleep_until > time.monotonic() + 5
    rds.hset("q:slow", mapping={"status": "new"})
    rds.lpush("q", "q:slow")
    started = time.monotonic()
    outcome = worker._step()
    worker.stopping.set()
    worker._wake.set()
    assert outcome == "dead"
    assert time.monotonic() - started < 15  # cut at its timeout, not at the next heartbeat (20 s)
    data = rds.hgetall("q:slow")
    assert data["status"] == "failed" and "JOB_TIMEOUT" in data["reason"]


def test_script_calls_survive_killed_connections_and_a_flushed_script_cache(rds, redis_server):
    client = redis_server.client()
    broker = Broker(client, "q", "w1")
    broker.heartbeat()
    for _ in range(2):
        rds.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # every connection but rds's
        assert broker.heartbeat() > 0
    rds.script_flush()
    assert broker.heartbeat() > 0  # NOSCRIPT: sent again with its source
    assert rds.zscore("consumers:q", "w1") is not None
    rds.delete("consumers:q")
    rds.set("consumers:q", "not a sorted set")
    with pytest.raises(redis.ResponseError):
        broker.heartbeat()
    rds.delete("consumers:q")
    assert broker.heartbeat() > 0  # the connection that carried the error reply is fine
    client.connection_pool.disconnect()  # what the worker does after an outage or a failover
    assert broker.heartbeat() > 0
    pool = client.connection_pool
    assert len(pool._in_use_connections) == 1  # the one the broker's lane keeps for this thread


def test_a_lane_is_kept_by_one_thread_and_shared_by_the_brokers_of_one_pool(redis_server):
    client = redis_server.client()
    pool = client.connection_pool
    broker = Broker(client, "q", "w1")
    broker.heartbeat()
    kept = set(pool._in_use_connections)
    assert len(kept) == 1
    other = threading.Thread(target=broker.heartbeat)
    other.start()
    other.join()
    assert pool._in_use_connections == kept  # another thread's call took a pool connection and gave it back
    broker.heartbeat()
    assert pool._in_use_connections == kept  # this thread keeps the same connection
    more = [Broker(client, "q", f"w{i}") for i in range(2, 50)]
    for b in more:
        b.heartbeat()
    assert pool._in_use_connections == kept  # one kept connection per pool, not one per broker


def test_many_brokers_on_one_small_pool_never_run_it_dry(redis_server):
    """A fleet simulation's shape: hundreds of brokers on a client whose pool allows a few connections."""
    client = redis.Redis(connection_pool=redis.ConnectionPool(host="127.0.0.1", port=redis_server.port,
                                                              max_connections=3))
    brokers = [Broker(client, f"q{i % 4}", f"w{i}") for i in range(300)]
    threads = [threading.Thread(target=lambda part=brokers[t::2]: [b.heartbeat() for b in part]) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in brokers:
        assert b.heartbeat() > 0
    assert client.zcard("consumers:q0") == 75


def test_a_lane_goes_with_its_pool(redis_server):
    import weakref

    client = redis_server.client()
    broker = Broker(client, "q", "w1")
    broker.heartbeat()
    pool = weakref.ref(client.connection_pool)
    del broker, client
    gc.collect()
    assert pool() is None  # the lane (and the connection it kept) did not keep the pool alive


class _Interrupt(BaseException):
    """Stands for JobTimeout, delivered to the main thread at any instruction."""


def test_an_interrupt_between_send_and_reply_never_leaves_a_stale_reply(rds, redis_server, monkeypatch):
    client = redis_server.client()
    broker = Broker(client, "q", "w1")
    broker.heartbeat()
    (conn,) = client.connection_pool._in_use_connections  # the one the broker's lane keeps
    real = conn.read_response

    def interrupted(*args, **kwargs):
        monkeypatch.setattr(conn, "read_response", real)
        raise _Interrupt()

    monkeypatch.setattr(conn, "read_response", interrupted)
    with pytest.raises(_Interrupt):
        broker.heartbeat()  # sent; its reply (the server time) is never read
    job = Claim(key="q:gone", token="t", attempts=1, previous_status="new")
    assert broker.update(job, {"a": "1"}) == -1  # this call's own reply, not the heartbeat's


def test_now_iso_reads_like_isoformat_and_never_goes_back():
    shape = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
    stamps = [now_iso() for _ in range(2000)]
    assert all(shape.match(s) for s in stamps), stamps[:3]
    parsed = [parse_iso(s) for s in stamps]
    assert parsed == sorted(parsed)
    # each stamp lies between two clock readings, also across second boundaries (where the
    # cached date part changes); 1 us of slack for datetime.now's rounding
    slack = timedelta(microseconds=1)
    time.sleep(1 - time.time() % 1 - 0.01 if time.time() % 1 < 0.98 else 0)
    crossed = set()
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        before = datetime.now(UTC)
        stamp = parse_iso(now_iso())
        after = datetime.now(UTC)
        assert before - slack <= stamp <= after + slack, (before, stamp, after)
        crossed.add(stamp.second)
    assert len(crossed) == 2  # the loop ran across one second boundary


def test_fields_decode_as_text_and_name_the_unreadable_ones():
    assert _decode_fields([b"status", b"new", b"name", "é".encode()]) == ({"status": "new", "name": "é"}, [])
    data, bad = _decode_fields([b"status", b"new", b"img", b"\xff\xfe", b"\xc3", b"x"])
    assert data["status"] == "new" and data["img"] == "\ufffd\ufffd"
    assert bad == ["img", "\\xc3"]


def test_the_blocking_claim_keeps_its_connection_and_survives_a_reset(rds, redis_server):
    blocking = redis_server.client(socket_timeout=5)
    broker = Broker(redis_server.client(), "q", "w1", blocking_client=blocking)
    assert broker.claim_next(0.1) is None  # BLMOVE timed out on the kept connection
    assert len(blocking.connection_pool._in_use_connections) == 1
    blocking.connection_pool.disconnect()  # what the worker does after an outage or a failover
    rds.hset("q:a", mapping={"status": "new"})
    rds.lpush("q", "q:a")
    claimed = broker.claim_next(0.1)
    assert claimed is not None and claimed.key == "q:a"
    assert broker._queue_empty  # the claim left the queue empty: the next one blocks at once
    rds.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    rds.hset("q:b", mapping={"status": "new"})
    rds.lpush("q", "q:b")
    assert broker.claim_next(0.1).key == "q:b"  # the killed connection's BLMOVE went through redis-py again
