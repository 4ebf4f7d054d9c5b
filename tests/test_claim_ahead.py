"""Claiming ahead (CLAIM_AHEAD): a short job's final write starts the job held behind it and holds
the next; held jobs are never charged an attempt, go back in queue order on every exit, and a
worker presumed dead cannot start one the reaper took back. Real redis-server throughout."""

from __future__ import annotations

import signal

from redis_consumer.queue import keys
from tests.helpers.net import wait_until
from tests.helpers.short_jobs import (
    TTL,
    make_job,
    short_job_broker,
    short_job_worker_env,
)
from tests.helpers.workers import restart_until, start_worker


def broker(r, cid="w1", ahead=1, short=60.0):
    return short_job_broker(r, cid, claim_ahead=ahead, claim_ahead_max_seconds=short)


def run_one(b):
    """Claim the next job and finish it; the claim."""
    claimed = b.claim_next(0.1)
    assert claimed is not None and claimed.outcome == "ok", claimed
    assert b.finish(claimed.job, "done", {"x": "1"}) >= 1
    return claimed


def test_a_final_write_starts_the_held_job_and_holds_the_next(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    run_one(b)  # a done; b started by a's final write, c held behind it
    assert rds.hget("q:b", "status") == "started"
    assert rds.lrange(b.processing_key, 0, -1) == ["q:c", "q:b"]
    assert rds.hget("q:c", "status") == "new" and not rds.hexists("q:c", "attempts") and not rds.hexists("q:c", "claim")
    second = run_one(b)  # b's final write starts c (its reply read at our next call)
    b.settle()
    assert second.key == "q:b" and rds.hget("q:b", "status") == "done"
    assert rds.hget("q:c", "status") == "started" and rds.hget("q:c", "attempts") == "1"
    third = b.claim_next(0.1)
    assert third.key == "q:c" and rds.hget("q:c", "claim") == third.job.token
    assert third.job.fields == rds.hgetall("q:c")
    b.finish(third.job, "done", {})
    fourth = run_one(b)
    assert fourth.key == "q:d" and b.claim_next(0.1) is None
    assert rds.llen(b.processing_key) == 0
    assert [rds.hget(k, "attempts") for k in ("q:a", "q:b", "q:c", "q:d")] == ["1"] * 4
    assert rds.get(keys.completed_counter("q")) == "4"


def test_a_final_write_sent_ahead_survives_a_script_flush(rds):
    """NOSCRIPT (Redis restarted or flushed its scripts) on a reply read later: the step did not
    run, so it is sent once more with its source, and the held job still starts."""
    for k in ("q:a", "q:b", "q:c"):
        make_job(rds, k)
    b = broker(rds)
    run_one(b)
    rds.script_flush()
    second = run_one(b)  # sent ahead, refused with NOSCRIPT, read at the settle below
    b.settle()
    assert second.key == "q:b" and rds.hget("q:b", "status") == "done"
    third = b.claim_next(0.1)
    assert third.key == "q:c" and rds.hget("q:c", "claim") == third.job.token
    assert b.finish(third.job, "done", {}) == 1 and rds.llen(b.processing_key) == 0


def test_nothing_is_held_while_jobs_are_slow_or_none_wait(rds):
    for k in ("q:a", "q:b", "q:c"):
        make_job(rds, k)
    slow = broker(rds, short=0.0)  # no job is shorter than 0 s
    run_one(slow)
    assert rds.lrange(slow.processing_key, 0, -1) == ["q:b"] and rds.lrange("q", 0, -1) == ["q:c"]
    off = broker(rds, "w2", ahead=0)
    make_job(rds, "q:d")
    run_one(off)
    assert rds.lrange(off.processing_key, 0, -1) == ["q:d"]  # c ran; d started, nothing held
    rds.delete(slow.processing_key, off.processing_key, "q")
    make_job(rds, "q:e")
    make_job(rds, "q:f")
    idle = broker(rds, "w3")
    run_one(idle)  # e done, f started; the queue is empty: nothing to hold
    assert rds.lrange(idle.processing_key, 0, -1) == ["q:f"] and rds.llen("q") == 0


def test_release_all_returns_started_and_held_jobs_in_order_uncharged(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    run_one(b)  # b started, c held, d waiting
    assert b.release_all() == 2
    assert [rds.rpop("q") for _ in range(3)] == ["q:b", "q:c", "q:d"]  # the queue's order kept
    data = rds.hgetall("q:b")
    assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
    assert not rds.hexists("q:c", "attempts") and rds.llen(b.processing_key) == 0


def test_reaper_charges_the_running_job_only(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    dead = broker(rds, "dead")
    run_one(dead)
    running = dead.claim_next(0.1)  # b runs, c is held behind it ... and the worker dies
    assert running.key == "q:b" and rds.lrange(dead.processing_key, 0, -1) == ["q:c", "q:b"]
    rds.zadd(keys.consumers("q"), {"dead": 1})
    reaper = broker(rds, "reaper")
    assert reaper.reap(lock_ms=100) == (2, 0, 1)
    assert [rds.rpop("q") for _ in range(3)] == ["q:b", "q:c", "q:d"]
    assert rds.hget("q:b", "attempts") == "1" and "stopped responding" in rds.hget("q:b", "last_error")
    held = rds.hgetall("q:c")
    assert held["status"] == "new" and "attempts" not in held and "last_error" not in held


def test_a_worker_presumed_dead_cannot_start_a_held_job_taken_back(rds):
    for k in ("q:a", "q:b", "q:c"):
        make_job(rds, k)
    zombie = broker(rds, "zombie")
    run_one(zombie)
    running = zombie.claim_next(0.1)  # b runs, c held; then the zombie stalls past its TTL
    rds.zadd(keys.consumers("q"), {"zombie": 1})
    assert broker(rds, "reaper").reap(lock_ms=100) == (2, 0, 1)
    other = broker(rds, "other", ahead=0)
    taken = [other.claim_next(0.1) for _ in range(2)]
    assert [t.key for t in taken] == ["q:b", "q:c"]
    # the zombie wakes up: its final write is fenced, and the held job it would start is not its own
    assert zombie.finish(running.job, "done", {}) == 1  # sent ahead: its reply is read later
    late = zombie.claim_next(0.1)
    assert late.key == "q:c"  # it runs, but none of its writes lands
    assert zombie.finish(late.job, "done", {"by": "zombie"}) == 0
    assert rds.hget("q:b", "claim") == taken[0].job.token and rds.hget("q:c", "claim") == taken[1].job.token
    assert rds.hget("q:c", "attempts") == "1" and not rds.hexists("q:c", "by")
    assert other.finish(taken[1].job, "done", {"by": "other"}) == 1 and rds.hget("q:c", "by") == "other"
    assert rds.llen(zombie.processing_key) == 0


def test_a_worker_presumed_dead_does_not_start_a_held_job_waiting_in_the_queue_again(rds):
    """The reaper put the held key back and nobody has claimed it yet (no `claim` on it): the
    zombie's next final write must not start it while it also waits in the queue."""
    for k in ("q:a", "q:b", "q:c"):
        make_job(rds, k)
    zombie = broker(rds, "zombie")
    run_one(zombie)
    running = zombie.claim_next(0.1)  # b runs, c held; then the zombie stalls past its TTL
    assert running.key == "q:b" and rds.lrange(zombie.processing_key, 0, -1) == ["q:c", "q:b"]
    rds.zadd(keys.consumers("q"), {"zombie": 1})
    assert broker(rds, "reaper").reap(lock_ms=100) == (2, 0, 1)
    assert rds.lrange("q", 0, -1) == ["q:c", "q:b"]
    zombie.finish(running.job, "done", {})  # fenced out; it must not start c either
    zombie.settle()
    assert rds.lrange("q", 0, -1) == ["q:c", "q:b"]
    held = rds.hgetall("q:c")
    assert held["status"] == "new" and "claim" not in held and "attempts" not in held


def test_a_job_ending_without_a_final_write_does_not_strand_the_held_one(rds):
    for k in ("q:a", "q:b", "q:c", "q:d"):
        make_job(rds, k)
    b = broker(rds)
    run_one(b)  # b started, c held
    flaky = b.claim_next(0.1)
    assert b.retry(flaky.job, "flaky") == "requeued"  # no final write to start c on
    held = b.claim_next(0.1)
    assert held.key == "q:c" and rds.hget("q:c", "claim") == held.job.token and held.job.attempts == 1
    assert held.job.fields == rds.hgetall("q:c")
    assert rds.lrange(b.processing_key, 0, -1) == ["q:c"]


def test_a_held_job_the_claim_step_would_refuse_is_decided_by_it(rds):
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    make_job(rds, "q:used", attempts="3")  # attempts used up: dead-lettered instead of started
    make_job(rds, "q:c")
    b = broker(rds)
    run_one(b)  # b started, q:used held
    second = b.claim_next(0.1)
    assert second.key == "q:b" and b.finish(second.job, "done", {}) == 1  # not sent ahead: the step decides
    refused = b.claim_next(0.1)
    assert refused.outcome == "dead" and refused.key == "q:used"
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:used"] and rds.hget("q:used", "attempts") == "3"
    assert run_one(b).key == "q:c" and rds.llen(b.processing_key) == 0


# -- real worker processes ---------------------------------------------------------------------

def worker_env(server, **extra):
    # (a batch setting above 1 replaces claiming ahead)
    return short_job_worker_env(server, **{"CLAIM_AHEAD": "1", "CLAIM_AHEAD_MAX_SECONDS": "5", "CLAIM_BATCH": "1",
                                           **extra})


def _held_behind(r, running_key):
    lists = r.keys("processing-q:*")
    return lists and r.lrange(lists[0], 0, -1)[-1:] == [running_key] and r.llen(lists[0]) > 1


def test_sigkill_with_held_jobs_reruns_them_without_charging_attempts(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:first")
    make_job(rds, "q:slow", sleep="60", sleep_attempts="1")
    behind = [f"q:behind{i}" for i in range(3)]
    for k in behind:
        make_job(rds, k)
    a = start_worker(worker_env(redis_server), str(tmp_path / "a.log"))
    procs.append(a)
    wait_until(lambda: rds.hget("q:slow", "status") == "predicting", message="the slow job to start")
    assert _held_behind(rds, "q:slow")  # q:behind0 waits in the killed worker's list, not started
    a.send_signal(signal.SIGKILL)
    procs.append(start_worker(worker_env(redis_server), str(tmp_path / "b.log")))
    wait_until(lambda: all(rds.hget(k, "status") == "done" for k in ["q:slow", *behind]), timeout=TTL + 15,
               message="recovery")
    assert rds.hget("q:slow", "attempts") == "2"  # the running job is charged
    assert [rds.hget(k, "attempts") for k in behind] == ["1"] * 3  # the held one is not
    assert [rds.get(f"test:results:{k}") for k in ["q:first", "q:slow", *behind]] == ["1"] * 5


def test_poison_job_is_still_dead_lettered_with_claim_ahead(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:warm")
    make_job(rds, "q:poison", poison="1")
    good = [f"q:good{i}" for i in range(8)]
    for k in good:
        make_job(rds, k)
    env = worker_env(redis_server, MAX_ATTEMPTS="3")
    def settled():
        return rds.hget("q:poison", "status") == "failed" and all(rds.hget(k, "status") == "done" for k in good)

    restarts = restart_until(settled, env, str(tmp_path), procs, timeout=60)
    data = rds.hgetall("q:poison")
    assert data["status"] == "failed" and data["attempts"] == "3" and "stopped responding" in data["reason"]
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:poison"]
    assert [rds.hget(k, "attempts") for k in good] == ["1"] * 8  # held behind it three times, never charged
    assert restarts == 3


def test_graceful_stop_past_grace_releases_held_jobs_in_order(rds, redis_server, procs, tmp_path):
    make_job(rds, "q:first")
    make_job(rds, "q:long", sleep="60")
    make_job(rds, "q:next1")
    make_job(rds, "q:next2")
    w = start_worker(worker_env(redis_server, SHUTDOWN_GRACE="0.5"), str(tmp_path / "w.log"))
    procs.append(w)
    wait_until(lambda: rds.hget("q:long", "status") == "predicting", message="the long job to start")
    assert _held_behind(rds, "q:long")
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert [rds.rpop("q") for _ in range(3)] == ["q:long", "q:next1", "q:next2"]
    data = rds.hgetall("q:long")
    assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
    assert rds.hget("q:next1", "status") == "new" and not rds.hexists("q:next1", "attempts")
    assert not rds.keys("processing-q:*") and rds.zcard(keys.consumers("q")) == 0
