"""The Lua steps of the job protocol against a real redis-server: claim, finish, fencing, reaper."""

from __future__ import annotations

import time

import pytest

from redis_consumer.queue import keys
from redis_consumer.queue.broker import Broker


def make_job(r, key, **fields):
    r.hset(key, mapping={"status": "new", "input_file_name": "in.tif", **fields})
    r.lpush("q", key)


def broker(r, cid="w1", **kw):
    kw.setdefault("max_attempts", 3)
    kw.setdefault("expire_time", 100)
    kw.setdefault("heartbeat_ttl", 30)
    return Broker(r, "q", cid, **kw)


def test_claim_is_fifo_and_marks_job_started(rds):
    for i in range(5):
        make_job(rds, f"q:j{i}")
    b = broker(rds)
    order = []
    for _ in range(5):
        res = b.claim_next(timeout=1)
        assert res.outcome == "ok"
        order.append(res.key)
        assert res.job.fields["status"] == "started"
        assert res.job.fields["claim"] == res.job.token
        assert res.job.attempts == 1
        assert rds.lrange(b.processing_key, 0, -1) == [res.key]
        assert b.finish(res.job, "done", {"output_url": "x"}) == 1
    assert order == [f"q:j{i}" for i in range(5)]
    assert b.claim_next(timeout=0.1) is None


def test_finish_writes_fields_expiry_and_is_idempotent(rds):
    make_job(rds, "q:a")
    b = broker(rds)
    job = b.claim_next(1).job
    assert b.finish(job, "done", {"output_url": "u", "total_time": 1.5}) == 1
    data = rds.hgetall("q:a")
    assert data["status"] == "done" and data["output_url"] == "u" and data["progress"] == "100"
    assert data["finished_at"].endswith("+00:00") and "." in data["finished_at"]
    assert 0 < rds.ttl("q:a") <= 100
    assert rds.llen(b.processing_key) == 0
    # a replay (e.g. a retried network call) changes nothing
    assert b.finish(job, "done", {"output_url": "other"}) == 2
    assert rds.hget("q:a", "output_url") == "u"
    assert rds.get(keys.completed_counter("q")) == "1"


def test_final_jobs_are_dropped_untouched(rds):
    rds.hset("q:done", mapping={"status": "done", "output_url": "keep"})
    rds.lpush("q", "q:done")
    b = broker(rds)
    res = b.claim_next(1)
    assert res.outcome == "final" and res.job is None
    assert rds.hgetall("q:done") == {"status": "done", "output_url": "keep"}
    assert rds.llen(b.processing_key) == 0


def test_missing_hash_and_wrong_type(rds):
    rds.lpush("q", "q:gone")
    rds.set("q:string", "not a hash")
    rds.lpush("q", "q:string")
    b = broker(rds)
    assert b.claim_next(1).outcome == "missing"
    res = b.claim_next(1)
    assert res.outcome == "wrongtype" and res.detail == "string"
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:string"]
    assert rds.llen(b.processing_key) == 0


def test_zombie_cannot_overwrite_newer_claim(rds):
    make_job(rds, "q:z")
    zombie, fresh = broker(rds, "zombie", heartbeat_ttl=0.2), broker(rds, "fresh")
    zombie.heartbeat()
    old = zombie.claim_next(1).job
    time.sleep(0.3)  # zombie's heartbeat expires
    assert fresh.reap(lock_ms=50) == (1, 0, 1)
    assert rds.lrange("q", 0, -1) == ["q:z"]
    new = fresh.claim_next(1).job
    assert new.attempts == 2
    assert not zombie.update(old, {"progress": 50})
    assert zombie.finish(old, "done", {"output_url": "zombie"}) == 0
    assert fresh.finish(new, "done", {"output_url": "fresh"}) == 1
    assert rds.hget("q:z", "output_url") == "fresh"
    assert zombie.retry(old, "late") == "stale"
    assert rds.hget("q:z", "status") == "done"


def test_reaper_requeues_at_head_and_dead_letters_after_max_attempts(rds):
    for k in ("q:old", "q:new"):
        make_job(rds, k)
    b = broker(rds, "dying", heartbeat_ttl=0.1, max_attempts=2)
    b.heartbeat()
    j1 = b.claim_next(1).job
    make_job(rds, "q:later")
    time.sleep(0.2)
    reaper = broker(rds, "reaper", max_attempts=2)
    assert reaper.reap(lock_ms=10) == (1, 0, 1)
    # the recovered job is served before jobs that were waiting behind it
    assert rds.lindex("q", -1) == j1.key
    assert rds.zscore(keys.consumers("q"), "dying") is None
    assert rds.exists(b.processing_key) == 0
    # second death: attempts (2) reached max_attempts -> dead letter
    b.heartbeat()
    j2 = b.claim_next(1).job
    assert j2.key == j1.key and j2.attempts == 2
    time.sleep(0.2)
    time.sleep(0.01)
    assert reaper.reap(lock_ms=10) == (0, 1, 1)
    data = rds.hgetall(j1.key)
    assert data["status"] == "failed" and data["failure_type"] == "system"
    assert "stopped responding" in data["reason"]
    assert rds.lrange(keys.dead("q"), 0, -1) == [j1.key]
    assert j1.key not in rds.lrange("q", 0, -1)


def test_reaper_lock_lets_one_worker_reap_at_a_time(rds):
    a, b = broker(rds, "a"), broker(rds, "b")
    assert a.reap(lock_ms=5000) == (0, 0, 0)
    assert b.reap(lock_ms=5000) is None


def test_live_consumers_are_not_reaped(rds):
    make_job(rds, "q:live")
    w = broker(rds, "live", heartbeat_ttl=30)
    w.heartbeat()
    job = w.claim_next(1).job
    assert broker(rds, "r").reap(lock_ms=10) == (0, 0, 0)
    assert rds.lrange(w.processing_key, 0, -1) == [job.key]


def test_retry_requeues_to_tail_then_fails_as_system(rds):
    make_job(rds, "q:flaky")
    make_job(rds, "q:other")
    b = broker(rds, max_attempts=2)
    j = b.claim_next(1).job
    assert b.retry(j, "server unavailable") == "requeued"
    data = rds.hgetall("q:flaky")
    assert data["status"] == "new" and data["last_error"] == "server unavailable" and "claim" not in data
    assert rds.lrange("q", 0, -1) == ["q:flaky", "q:other"]  # tail: others go first
    assert b.claim_next(1).key == "q:other"
    j = b.claim_next(1).job
    assert j.key == "q:flaky" and j.attempts == 2
    assert b.retry(j, "still unavailable") == "dead"
    data = rds.hgetall("q:flaky")
    assert data["status"] == "failed" and data["failure_type"] == "system" and data["reason"] == "still unavailable"
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:flaky"]


def test_release_puts_job_back_at_head_without_counting(rds):
    make_job(rds, "q:first")
    make_job(rds, "q:second")
    b = broker(rds)
    j = b.claim_next(1).job
    assert b.release(j) == "released"
    assert rds.hget("q:first", "attempts") == "0"
    assert rds.lindex("q", -1) == "q:first"
    assert b.claim_next(1).job.attempts == 1


def test_release_all_returns_unclaimed_keys(rds):
    make_job(rds, "q:1")
    make_job(rds, "q:2")
    b = broker(rds)
    assert b.pop(1) == "q:1"  # reply "lost": never claimed
    assert b.release_all() == 1
    assert rds.lrange("q", 0, -1) == ["q:2", "q:1"]


def test_heartbeat_uses_server_clock_and_registers_queue(rds):
    b = broker(rds, heartbeat_ttl=30)
    now = b.heartbeat()
    server_now = float(rds.time()[0])
    assert abs(now - server_now) < 2
    assert rds.zscore(keys.consumers("q"), "w1") == pytest.approx(now + 30, abs=0.01)
    assert rds.smembers(keys.QUEUES_SET) == {"q"}
    b.deregister()
    assert rds.zcard(keys.consumers("q")) == 0


def test_park_and_fan_in_counters(rds):
    rds.hset("q-zip:p", mapping={"status": "new"})
    rds.lpush("q-zip", "q-zip:p")
    parent_b = Broker(rds, "q-zip", "w", expire_time=100)
    child_b = broker(rds, "c")
    parent = parent_b.claim_next(1).job
    for i in range(3):
        make_job(rds, f"q:c{i}", parent="q-zip:p", parent_queue="q-zip")
    # one child ends before the parent is parked: counted, parent not pushed yet
    c0 = child_b.claim_next(1).job
    assert child_b.finish(c0, "done", {}) == 1
    assert rds.llen("q-zip") == 0
    assert parent_b.park(parent, 3) == 1
    assert rds.hget("q-zip:p", "status") == "waiting"
    c1 = child_b.claim_next(1).job
    child_b.finish(c1, "failed", {"reason": "bad"})
    assert rds.hget("q-zip:p", "progress") == "66"
    assert rds.llen("q-zip") == 0
    c2 = child_b.claim_next(1).job
    child_b.finish(c2, "done", {})
    assert rds.lrange("q-zip", 0, -1) == ["q-zip:p"]
    data = rds.hgetall("q-zip:p")
    assert (data["children_done"], data["children_failed"], data["children_total"]) == ("2", "1", "3")
    back = parent_b.claim_next(1)
    assert back.job.previous_status == "waiting"


def test_park_requeues_at_once_when_children_already_ended(rds):
    rds.hset("q-zip:p", mapping={"status": "new", "children_done": 2})
    rds.lpush("q-zip", "q-zip:p")
    b = Broker(rds, "q-zip", "w")
    job = b.claim_next(1).job
    assert b.park(job, 2) == 2
    assert rds.lrange("q-zip", 0, -1) == ["q-zip:p"]


def test_job_log_is_capped_and_expires(rds):
    make_job(rds, "q:x")
    b = broker(rds, log_lines=3)
    job = b.claim_next(1).job
    assert b.append_log(job, [f"line {i}" for i in range(5)]) == 1  # fenced, like every write of a claim
    assert rds.lrange(keys.job_log("q:x"), 0, -1) == ["line 2", "line 3", "line 4"]
    assert rds.ttl(keys.job_log("q:x")) > 0


def test_enqueue_is_safe_to_retry(rds):
    """A producer's retried submission neither requeues nor resets a job a worker already finished."""
    from redis_consumer.queue.producer import enqueue

    assert enqueue(rds, "q", "q:sub", {"status": "new", "input_file_name": "in.tif"}) is True
    b = broker(rds)
    job = b.claim_next(1).job
    b.finish(job, "done", {"output_url": "u"})
    assert enqueue(rds, "q", "q:sub", {"status": "new", "input_file_name": "in.tif"}) is False  # the retry
    assert rds.hget("q:sub", "status") == "done"
    assert rds.llen("q") == 0


def test_confirm_replicated_waits_for_a_replica(rds, redis_server):
    from redis_consumer.queue.producer import confirm_replicated
    from tests.helpers.redis_server import RedisServer

    assert confirm_replicated(rds) is None  # no replica: nothing to wait for
    rds.config_set("repl-diskless-sync-delay", 0)
    replica = RedisServer(appendonly=False, extra=["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    try:
        from tests.helpers.net import wait_until

        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up",
                   message="replica in sync")
        rds.set("x", "1")
        assert confirm_replicated(rds, timeout_ms=3000) is True
        assert replica.client().get("x") == "1"
    finally:
        replica.cleanup()
