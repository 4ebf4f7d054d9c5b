"""Batches (CLAIM_BATCH): one script call sends the buffered final writes of several short jobs and
starts the next ones, each fenced by its own token; jobs started together are never charged for a
SIGKILL (the reaper gives the attempt back and they run alone next), a poison job still
dead-letters, and every exit sends the buffered results and gives back the jobs not run.
Real redis-server throughout."""

from __future__ import annotations

import logging
import signal
import time

import pytest
import redis

from redis_consumer.queue import keys
from tests.helpers.net import wait_until
from tests.helpers.short_jobs import (
    TTL,
    make_job,
    short_job_broker,
    short_job_worker_env,
)
from tests.helpers.workers import restart_until, start_worker


def broker(r, cid="w1", batch=3, short=60.0):
    return short_job_broker(r, cid, claim_batch=batch, claim_ahead_max_seconds=short)


def claim(b):
    claimed = b.claim_next(0.1)
    assert claimed is not None and claimed.outcome == "ok", claimed
    return claimed.job


def started_batch(r, b, names):
    """Run the warm-up job `q:a` alone; its final write starts `names` as one batch."""
    first = claim(b)
    assert first.key == "q:a" and "claim_batch" not in first.fields
    assert b.finish(first, "done", {}) == 1
    for k in names:
        assert r.hget(k, "status") == "started" and r.hget(k, "claim_batch") == r.hget(k, "claim")
    return first


def test_a_batch_finishes_and_starts_several_jobs_per_call(rds):
    names = [f"q:{c}" for c in "abcdef"]
    for k in names:
        make_job(rds, k)
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    assert rds.lrange(b.processing_key, 0, -1) == ["q:d", "q:c", "q:b"]
    tokens = {rds.hget(k, "claim") for k in ("q:b", "q:c", "q:d")}
    assert len(tokens) == 3  # one fencing token per job
    assert rds.hget("q:e", "status") == "new"
    for k in ("q:b", "q:c"):
        job = claim(b)
        assert job.key == k and job.fields == rds.hgetall(k) and job.attempts == 1
        assert b.finish(job, "done", {"out": k}) == 1  # buffered: more of its batch remain to run
        assert rds.hget(k, "status") == "started"
    last = claim(b)
    assert last.key == "q:d"
    assert b.finish(last, "done", {"out": "q:d"}) == 1  # the batch's last: b, c, d sent, e and f started
    assert [rds.hget(k, "out") for k in ("q:b", "q:c", "q:d")] == ["q:b", "q:c", "q:d"]
    assert [rds.hget(k, "status") for k in ("q:e", "q:f")] == ["started", "started"]
    for k in ("q:e", "q:f"):
        job = claim(b)
        assert job.key == k
        b.finish(job, "done", {})
    assert b.claim_next(0.1) is None  # the last batch call found the queue empty: b.flush() ran with it
    assert all(rds.hget(k, "status") == "done" for k in names)
    assert [rds.hget(k, "attempts") for k in names] == ["1"] * 6
    assert rds.get(keys.completed_counter("q")) == "6" and rds.llen(b.processing_key) == 0


def test_a_claim_step_error_inside_a_batch_gives_the_batch_back_uncharged(rds):
    """A claim step that raises in Redis mid-batch (here a dead-lettered zip child whose producer named a
    `parent_queue` that is not a list: the fan-in's RPUSH fails) ends the batch there: the final write
    before it stands, the job it had started goes back to the queue uncharged, the rest wait, and
    the broker goes on."""
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    make_job(rds, "q:c", attempts="3", parent="q:parent", parent_queue="not-a-list")
    make_job(rds, "q:d")
    rds.hset("q:parent", mapping={"status": "waiting", "children_total": "1"})
    rds.set("not-a-list", "x")
    b = broker(rds)
    first = claim(b)
    assert first.key == "q:a"
    assert b.finish(first, "done", {}) == 1  # this final write's call starts b, then fails on c
    assert rds.hget("q:a", "status") == "done"
    assert rds.hget("q:c", "status") == "failed" and rds.lrange(keys.dead("q"), 0, -1) == ["q:c"]
    assert rds.hget("q:b", "status") == "new" and rds.hget("q:b", "attempts") == "0"  # given back
    assert rds.llen(b.processing_key) == 0
    ran = []
    while (claimed := b.claim_next(0.1)) is not None:
        assert claimed.outcome == "ok", claimed
        ran.append(claimed.job.key)
        b.finish(claimed.job, "done", {})
    assert ran == ["q:b", "q:d"]
    assert [rds.hget(k, "status") for k in ("q:b", "q:d")] == ["done", "done"]
    assert [rds.hget(k, "attempts") for k in ("q:b", "q:d")] == ["1", "1"]


def test_no_batch_while_jobs_are_slow(rds):
    for k in ("q:a", "q:b", "q:c"):
        make_job(rds, k)
    b = broker(rds, short=0.0)
    b.finish(claim(b), "done", {})
    assert rds.hget("q:b", "status") == "started" and not rds.hexists("q:b", "claim_batch")
    assert rds.hget("q:c", "status") == "new"  # one start per call, as without batches


def test_stale_and_vanished_final_writes_inside_a_batch_never_land(rds, caplog):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    with caplog.at_level(logging.WARNING):
        assert b.finish(claim(b), "done", {"out": "b"}) == 1
        assert b.finish(claim(b), "done", {"out": "c"}) == 1  # buffered: its reply is not known yet
        jd = claim(b)
        rds.hset("q:c", "claim", "another-claim")  # the reaper took it back and another worker claimed it
        rds.delete("q:d")
        assert b.finish(jd, "done", {"out": "d"}) == -1
    assert rds.hget("q:b", "out") == "b"
    assert rds.hget("q:c", "status") == "started" and not rds.hexists("q:c", "out")
    assert not rds.exists("q:d")
    assert "q:c finished, but a newer claim owns it" in caplog.text
    assert rds.get(keys.completed_counter("q")) == "2"  # a and b


def test_reaped_batch_jobs_get_their_attempt_back_and_start_alone(rds):
    for k in ("q:a", "q:b", "q:c", "q:d", "q:e"):
        make_job(rds, k)
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    rds.zadd(keys.consumers("q"), {"w1": 0})  # w1 died (SIGKILL) with its batch
    other = broker(rds, "w2")
    assert other.reap(1000) == (3, 0, 1)
    for k in ("q:b", "q:c", "q:d"):
        data = rds.hgetall(k)
        assert data["status"] == "new" and data["attempts"] == "0" and data["claim_alone"] == "1", data
        assert "claim" not in data and "claim_batch" not in data
    assert rds.lrange("q", 0, -1) == ["q:e", "q:d", "q:c", "q:b"]
    # each marked job is started alone (first of its call, nothing after it) and charged as any job
    seen = []
    while (claimed := other.claim_next(0.1)) is not None:
        job = claimed.job
        seen.append((job.key, "claim_batch" in job.fields, rds.hget(job.key, "claim_batch")))
        if job.key in ("q:b", "q:c"):
            assert rds.llen(other.processing_key) == 1  # nothing started with it
        other.finish(job, "done", {})
    assert seen == [("q:b", False, None), ("q:c", False, None), ("q:d", False, None), ("q:e", False, None)]
    assert [rds.hget(k, "attempts") for k in ("q:b", "q:c", "q:d", "q:e")] == ["1"] * 4


def test_a_job_to_start_alone_ends_the_batch_before_it(rds):
    for k in ("q:a", "q:b"):
        make_job(rds, k)
    make_job(rds, "q:lonely", claim_alone="1")
    make_job(rds, "q:z")
    b = broker(rds)
    first = claim(b)
    b.finish(first, "done", {})  # starts b; q:lonely may not join it: back at the queue's oldest end
    assert rds.lrange("q", 0, -1) == ["q:z", "q:lonely"]
    assert rds.hget("q:b", "status") == "started" and not rds.hexists("q:b", "claim_batch")  # alone after all
    job = claim(b)
    b.finish(job, "done", {})  # starts q:lonely alone
    assert rds.hget("q:lonely", "status") == "started" and rds.hget("q:z", "status") == "new"
    lonely = claim(b)
    assert lonely.key == "q:lonely" and "claim_batch" not in lonely.fields
    b.finish(lonely, "done", {})
    assert claim(b).key == "q:z"


def test_a_zip_parent_resuming_its_fan_in_is_started_alone(rds):
    for k in ("q:a", "q:b"):
        make_job(rds, k)
    make_job(rds, "q:parent", status="waiting", children_total="1", children_done="1")
    make_job(rds, "q:z")
    b = broker(rds)
    b.finish(claim(b), "done", {})  # starts q:b; the parent may not join it
    assert rds.hget("q:parent", "status") == "waiting" and rds.lrange("q", 0, -1) == ["q:z", "q:parent"]
    b.finish(claim(b), "done", {})  # starts the parent, alone
    parent = claim(b)
    assert parent.key == "q:parent" and parent.previous_status == "waiting" and "claim_batch" not in parent.fields
    assert rds.hget("q:z", "status") == "new"


def test_unrun_jobs_of_a_batch_handed_back_keep_their_status_and_attempts(rds):
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    make_job(rds, "q:c", status="exploded")  # a producer's status: the claim step records it, the runner refuses it
    make_job(rds, "q:d")
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    running = claim(b)
    assert b.run_due(running) < float("inf")
    assert b.give_back_unrun(b) == 2  # (the worker's supervisor passes its own broker)
    assert [rds.rpop("q") for _ in range(2)] == ["q:c", "q:d"]  # in queue order, at the oldest end
    assert rds.hget("q:c", "status") == "exploded" and rds.hget("q:d", "status") == "new"
    assert [rds.hget(k, "attempts") for k in ("q:c", "q:d")] == ["0", "0"]
    assert b.run_due(running) == float("inf")
    assert b.finish(running, "done", {}) == 1 and rds.hget("q:b", "status") == "done"


def test_release_all_sends_buffered_results_and_returns_unrun_jobs_uncharged(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    assert b.finish(claim(b), "done", {"out": "b"}) == 1
    assert rds.hget("q:b", "status") == "started"
    assert b.release_all() == 2
    assert rds.hget("q:b", "status") == "done" and rds.hget("q:b", "out") == "b"
    assert [rds.rpop("q") for _ in range(2)] == ["q:c", "q:d"]  # in queue order
    for k in ("q:c", "q:d"):
        data = rds.hgetall(k)
        assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
    assert b.claim_next(0.1) is None and rds.llen(b.processing_key) == 0


def test_a_non_final_end_sends_the_buffer_first(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    b.finish(claim(b), "done", {})
    assert b.retry(claim(b), "boom") == "requeued"
    assert rds.hget("q:b", "status") == "done"  # sent before the retry
    assert claim(b).key == "q:d"  # the rest of the batch still runs


def test_a_batch_jobs_deadline_counts_from_its_hand_out(rds):
    for k in ("q:a", "q:b", "q:c"):
        make_job(rds, k)
    b = broker(rds)
    b.finish(claim(b), "done", {})
    time.sleep(0.3)
    before = time.monotonic()
    handed = b.claim_next(0.1, job_timeout=5.0).job
    assert handed.key == "q:b" and before + 5.0 <= handed.deadline <= time.monotonic() + 5.0


def test_a_failed_batch_call_leaves_its_jobs_to_release_all_uncharged(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    b.finish(claim(b), "done", {})
    b.finish(claim(b), "done", {})
    last = claim(b)
    script = b._finish_batch

    def broken(**_kwargs):
        raise redis.ConnectionError("connection reset")

    b._finish_batch = broken
    with pytest.raises(redis.ConnectionError):
        b.finish(last, "done", {})
    b._finish_batch = script
    assert b.release_all() == 3  # (recovery: the worker's `_recover_own_list`)
    assert [rds.rpop("q") for _ in range(3)] == ["q:b", "q:c", "q:d"]
    for k in ("q:b", "q:c", "q:d"):  # they ran, but their results never left: they run again, uncharged
        data = rds.hgetall(k)
        assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data


def test_a_buffered_result_waits_at_most_the_bound(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds, short=0.3)
    started_batch(rds, b, ["q:b", "q:c", "q:d"])
    assert b.finish(claim(b), "done", {}) == 1
    assert rds.hget("q:b", "status") == "started"
    assert b.buffer_due() <= time.monotonic() + 0.3
    time.sleep(0.35)
    assert claim(b).key == "q:c"  # handing out the next job sends a buffer older than the bound
    assert rds.hget("q:b", "status") == "done"


def test_the_batch_start_is_the_claim_step(rds):
    """Each start in a batch has the claim step's rules: missing, wrongtype, final and
    used-up attempts are decided there, and the batch goes on past them."""
    make_job(rds, "q:a")
    rds.lpush("q", "q:missing")
    rds.set("q:string", "x")
    rds.lpush("q", "q:string")
    make_job(rds, "q:final", status="done")
    make_job(rds, "q:used", attempts="3")
    make_job(rds, "q:ok")
    b = broker(rds, batch=6)
    b.finish(claim(b), "done", {})
    outcomes = []
    while (claimed := b.claim_next(0.1)) is not None:
        outcomes.append((claimed.outcome, claimed.key))
        if claimed.job is not None:
            b.finish(claimed.job, "done", {})
    assert outcomes == [("missing", "q:missing"), ("wrongtype", "q:string"), ("final", "q:final"),
                        ("dead", "q:used"), ("ok", "q:ok")]
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:used", "q:string"]
    assert rds.hget("q:ok", "status") == "done" and rds.hget("q:ok", "claim_batch") is None  # the only start
    assert rds.llen(b.processing_key) == 0


def test_zip_children_finished_in_a_batch_are_counted_once(rds):
    rds.hset("q:parent", mapping={"status": "waiting", "children_total": "3", "children_done": "0"})
    make_job(rds, "q:a")
    for i in range(3):
        make_job(rds, f"q:child{i}", parent="q:parent", parent_queue="pq")
    b = broker(rds)
    started_batch(rds, b, [f"q:child{i}" for i in range(3)])
    for _ in range(3):
        b.finish(claim(b), "done", {})
    assert rds.hget("q:parent", "children_done") == "3" and rds.lrange("pq", 0, -1) == ["q:parent"]


# -- real worker processes ---------------------------------------------------------------------

def worker_env(server, **extra):
    return short_job_worker_env(server, **{"CLAIM_BATCH": "4", "CLAIM_AHEAD_MAX_SECONDS": "0.5", **extra})


def _batch_around(r, key):
    """The jobs started in the same batch as `key` (its worker's processing list, all claimed)."""
    lists = r.keys("processing-q:*")
    return [k for k in r.lrange(lists[0], 0, -1) if r.hget(k, "claim_batch")] if lists else []


def test_results_of_a_batch_are_sent_while_a_long_job_runs(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:warm")
    make_job(rds, "q:short")
    make_job(rds, "q:long", sleep="60")
    make_job(rds, "q:after")
    procs.append(start_worker(worker_env(redis_server), str(tmp_path / "w.log")))
    wait_until(lambda: rds.hget("q:long", "status") == "predicting", message="the long job to start")
    assert rds.hget("q:long", "claim_batch") == rds.hget("q:long", "claim")  # started in a batch
    # q:short's result was buffered behind q:long: the supervisor sends it within the bound
    wait_until(lambda: rds.hget("q:short", "status") == "done", timeout=3, message="the buffered result")
    # ... and q:after, started with it, goes back to the queue (uncharged) instead of waiting behind it
    wait_until(lambda: rds.lrange("q", 0, -1) == ["q:after"], timeout=3, message="the rest of the batch back")
    data = rds.hgetall("q:after")
    assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
    assert rds.hget("q:long", "status") == "predicting"


def test_sigkill_mid_batch_reruns_every_job_once_and_charges_none(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:warm")
    make_job(rds, "q:first")
    make_job(rds, "q:slow", sleep="60")
    rest = [f"q:rest{i}" for i in range(6)]
    for k in rest:
        make_job(rds, k)
    # a long bound: the batch behind q:slow stays there, and q:first's result stays buffered
    a = start_worker(worker_env(redis_server, CLAIM_AHEAD_MAX_SECONDS="30"), str(tmp_path / "a.log"))
    procs.append(a)
    wait_until(lambda: rds.hget("q:slow", "status") == "predicting", message="the slow job to start")
    in_batch = _batch_around(rds, "q:slow")
    assert {"q:first", "q:slow", "q:rest0"} <= set(in_batch)
    assert rds.hget("q:first", "status") == "started"  # ran, its result buffered
    a.send_signal(signal.SIGKILL)
    a.wait(10)
    rds.hdel("q:slow", "sleep")  # it was slow only once
    procs.append(start_worker(worker_env(redis_server), str(tmp_path / "b.log")))
    everything = ["q:warm", "q:first", "q:slow", *rest]
    wait_until(lambda: all(rds.hget(k, "status") == "done" for k in everything), timeout=TTL + 20,
               message="recovery")
    assert [rds.hget(k, "attempts") for k in everything] == ["1"] * len(everything)  # none charged for the kill
    assert rds.get(keys.completed_counter("q")) == str(len(everything))  # each final write landed once
    # q:first's result died with its worker's buffer: it ran again (at least once); the others once
    runs = {k: rds.get(f"test:results:{k}") for k in everything}
    assert runs.pop("q:first") == "2" and set(runs.values()) == {"1"}
    assert rds.llen(keys.dead("q")) == 0
    assert all(rds.hget(k, "claim_alone") == "1" for k in in_batch)


def test_poison_job_is_dead_lettered_and_its_batch_is_not(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:warm")
    make_job(rds, "q:poison", poison="1")
    good = [f"q:good{i}" for i in range(8)]
    for k in good:
        make_job(rds, k)
    env = worker_env(redis_server, MAX_ATTEMPTS="3")
    def settled():
        return rds.hget("q:poison", "status") == "failed" and all(rds.hget(k, "status") == "done" for k in good)

    restarts = restart_until(settled, env, str(tmp_path), procs, timeout=90)
    data = rds.hgetall("q:poison")
    assert data["status"] == "failed" and data["attempts"] == "3" and "stopped responding" in data["reason"]
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:poison"]
    assert [rds.hget(k, "status") for k in good] == ["done"] * 8
    assert [rds.hget(k, "attempts") for k in good] == ["1"] * 8  # in its batch once, never charged
    assert restarts == 4  # one kill in a batch (not charged), then three alone


def test_graceful_stop_mid_batch_sends_results_and_returns_the_unrun_uncharged(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:warm")
    make_job(rds, "q:first")
    make_job(rds, "q:mid", sleep="1")
    make_job(rds, "q:next1")
    make_job(rds, "q:next2")
    w = start_worker(worker_env(redis_server, SHUTDOWN_GRACE="30", CLAIM_AHEAD_MAX_SECONDS="5"),
                     str(tmp_path / "w.log"))
    procs.append(w)
    wait_until(lambda: rds.hget("q:mid", "status") == "predicting", message="the batch's second job to start")
    assert rds.hget("q:next2", "claim_batch") == rds.hget("q:next2", "claim")
    assert rds.hget("q:first", "status") == "started"  # its result is buffered (the bound is 5 s here)
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert [rds.hget(k, "status") for k in ("q:warm", "q:first", "q:mid")] == ["done"] * 3
    assert [rds.rpop("q") for _ in range(2)] == ["q:next1", "q:next2"]
    for k in ("q:next1", "q:next2"):
        data = rds.hgetall(k)
        assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
    assert not rds.keys("processing-q:*") and rds.zcard(keys.consumers("q")) == 0


def test_stop_past_grace_mid_batch_sends_results_and_returns_the_rest_uncharged(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:warm")
    make_job(rds, "q:first")
    make_job(rds, "q:long", sleep="60")
    make_job(rds, "q:next1")
    w = start_worker(worker_env(redis_server, SHUTDOWN_GRACE="0.5", CLAIM_AHEAD_MAX_SECONDS="5"),
                     str(tmp_path / "w.log"))
    procs.append(w)
    wait_until(lambda: rds.hget("q:long", "status") == "predicting", message="the long job to start")
    assert rds.hget("q:first", "status") == "started"  # buffered
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert rds.hget("q:first", "status") == "done"
    assert [rds.rpop("q") for _ in range(2)] == ["q:long", "q:next1"]
    for k in ("q:long", "q:next1"):
        data = rds.hgetall(k)
        assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
