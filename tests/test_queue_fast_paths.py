"""The cheaper claim/finish steps keep the protocol: attempts counted as HINCRBY would, garbage
counters dropped, the claim's fields equal to the hash, and a claim made ahead by `finish`
(prefetch) is handed back on shutdown without counting its attempt."""

from __future__ import annotations

import pytest

from redis_consumer.queue import keys
from redis_consumer.queue.broker import Broker


def make_job(r, key, **fields):
    r.hset(key, mapping={"status": "new", "input_file_name": "in.tif", **fields})
    r.lpush("q", key)


def broker(r, cid="w1", **kw):
    return Broker(r, "q", cid, max_attempts=kw.pop("max_attempts", 3), expire_time=100, heartbeat_ttl=30, **kw)


@pytest.mark.parametrize(("stored", "counted"), [
    (None, 1), ("0", 1), ("1", 2), ("-7", 1), ("2.5", 1), ("text", 1), ("007", 1), (" 1", 1), ("-0", 1),
])
def test_claim_counts_attempts_like_hincrby_and_resets_garbage(rds, stored, counted):
    make_job(rds, "q:a", **({} if stored is None else {"attempts": stored}))
    res = broker(rds).try_claim()
    assert res.outcome == "ok" and res.job.attempts == counted
    assert rds.hget("q:a", "attempts") == str(counted)


def test_claim_fields_equal_the_hash_and_garbage_counters_are_dropped(rds):
    make_job(rds, "q:a", children_total="x", children_done="3", children_failed="-1", extra="e")
    res = broker(rds).try_claim()
    assert res.outcome == "ok"
    stored = rds.hgetall("q:a")
    assert res.job.fields == stored
    assert "children_total" not in stored and "children_failed" not in stored and stored["children_done"] == "3"
    assert stored["status"] == "started" and stored["claim"] == res.job.token and stored["extra"] == "e"


def test_claim_used_up_attempts_dead_letters_without_changing_them(rds):
    make_job(rds, "q:a", attempts="3")
    res = broker(rds).try_claim()
    assert res.outcome == "dead" and rds.hget("q:a", "attempts") == "3"
    assert rds.hget("q:a", "status") == "failed" and rds.lrange(keys.dead("q"), 0, -1) == ["q:a"]


def test_claim_missing_and_wrongtype(rds):
    rds.lpush("q", "q:gone")
    rds.set("q:str", "x")
    rds.lpush("q", "q:str")
    b = broker(rds)
    assert b.try_claim().outcome == "missing"
    res = b.try_claim()
    assert res.outcome == "wrongtype" and res.detail == "string"
    assert rds.llen(b.processing_key) == 0


def test_finish_trims_the_log_to_its_cap(rds):
    make_job(rds, "q:a")
    b = broker(rds, log_lines=3)
    job = b.try_claim().job
    assert b.update(job, {}, ["l1", "l2"]) == 1
    assert b.finish(job, "done", {}, log_lines=["l3", "l4"]) == 1
    assert rds.lrange(keys.job_log("q:a"), 0, -1) == ["l2", "l3", "l4"]
    assert 0 < rds.ttl(keys.job_log("q:a")) <= 100 and 0 < rds.ttl("q:a") <= 100


def test_finish_prefetches_the_next_claim_and_release_all_gives_it_back_uncounted(rds):
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    b = broker(rds)
    b.prefetch = lambda: True
    first = b.claim_next(0.1)
    assert first.key == "q:a"
    assert b.finish(first.job, "done", {"x": "1"}) == 1
    assert rds.hget("q:a", "status") == "done"
    assert rds.hget("q:b", "status") == "started" and rds.lrange(b.processing_key, 0, -1) == ["q:b"]
    b.release_all()  # shutdown before running it: back to the queue head, attempt not counted
    assert rds.lrange("q", 0, -1) == ["q:b"] and rds.llen(b.processing_key) == 0
    again = broker(rds, "w2").try_claim()
    assert again.key == "q:b" and again.job.attempts == 1


def test_prefetched_claim_is_what_claim_next_returns(rds):
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    b = broker(rds)
    b.prefetch = lambda: True
    first = b.claim_next(0.1)
    b.finish(first.job, "done", {})
    second = b.claim_next(0.1)
    assert second.key == "q:b" and rds.hget("q:b", "claim") == second.job.token
    assert b.finish(second.job, "done", {}) == 1  # the queue is empty now: nothing held
    assert b.claim_next(0.1) is None and rds.llen(b.processing_key) == 0


def test_no_prefetch_when_the_worker_stops(rds):
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    b = broker(rds)
    b.prefetch = lambda: False
    first = b.claim_next(0.1)
    b.finish(first.job, "done", {})
    assert rds.hget("q:b", "status") == "new" and rds.lrange("q", 0, -1) == ["q:b"]


def test_prefetch_through_the_combined_step_reports_a_bad_next_key(rds):
    make_job(rds, "q:a")
    rds.set("q:str", "x")
    rds.lpush("q", "q:str")
    b = broker(rds)
    b.prefetch = lambda: True
    first = b.claim_next(0.1)
    assert b.finish(first.job, "done", {}, log_lines=["bye"]) == 1
    assert rds.hget("q:a", "status") == "done" and rds.lrange(keys.job_log("q:a"), 0, -1) == ["bye"]
    nxt = b.claim_next(0.1)
    assert nxt.outcome == "wrongtype" and nxt.key == "q:str" and rds.lrange(keys.dead("q"), 0, -1) == ["q:str"]
    assert rds.llen(b.processing_key) == 0


def test_prefetch_keeps_fencing_a_stale_finish(rds):
    make_job(rds, "q:a")
    make_job(rds, "q:b")
    b = broker(rds)
    b.prefetch = lambda: True
    first = b.claim_next(0.1)
    rds.hset("q:a", "claim", "someone-else")
    assert b.finish(first.job, "done", {}) == 0 and rds.hget("q:a", "status") == "started"
    assert b.claim_next(0.1).key == "q:b"


def test_claim_fields_are_the_hash_as_it_is_now_also_through_the_combined_step(rds):
    """The claim step replies with the hash as read and the broker lays the claim over it: the
    result must equal the stored hash, on the plain claim and on the claim riding on a finish."""
    make_job(rds, "q:a", attempts="1", children_total="oops", updated_at="old")
    make_job(rds, "q:b", children_done="2", children_failed="x", started_at="old")
    b = broker(rds)
    b.prefetch = lambda: True
    first = b.claim_next(0.1)
    assert first.job.fields == rds.hgetall("q:a") and first.job.attempts == 2
    assert b.finish(first.job, "done", {}) == 1
    second = b.claim_next(0.1)
    assert second.key == "q:b" and second.job.fields == rds.hgetall("q:b")
    assert "children_failed" not in second.job.fields and second.job.fields["children_done"] == "2"


def test_claim_names_unreadable_fields_but_not_the_ones_it_wrote(rds):
    rds.hset("q:a", mapping={"status": b"new\xff", "updated_at": b"\xfe", "extra": b"\xff"})
    rds.lpush("q", "q:a")
    res = broker(rds).try_claim()
    assert res.outcome == "ok" and res.job.unreadable == ["extra"]
    assert res.job.fields["status"] == "started" and res.job.fields["updated_at"] == rds.hget("q:a", "updated_at")
