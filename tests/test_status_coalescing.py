"""Stage statuses and progress are coalesced (STATUS_MIN_INTERVAL): a short job writes none between
its claim and its final write, a long stage still shows while it runs, the final write wins over
any deferred change, and a deferred write made after the claim was lost writes nothing."""

from __future__ import annotations

import time

import pytest

from redis_consumer.consumers import Consumer, Job
from redis_consumer.errors import ClaimLost
from redis_consumer.queue import Status, keys
from redis_consumer.runner import Outcome
from tests.consumer_harness import Harness, settings_for
from tests.helpers.net import wait_until
from tests.helpers.redis_server import env_for
from tests.helpers.workers import start_worker


def push(r, key, queue="q", **fields):
    r.hset(key, mapping={"status": "new", **fields})
    r.lpush(queue, key)


def script_calls(r) -> int:
    stats = r.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


class _Staged(Consumer):
    """Four stage/progress changes in a few milliseconds, like a small segmentation job."""

    name = "staged"

    def consume(self, job: Job):
        with job.stage("download"):
            job.log("fetched")
        with job.stage("predict"):
            job.progress(50)
        with job.stage("save"):
            pass
        return {"output_url": "u"}


@pytest.mark.parametrize("interval", [0.0, 5.0])
def test_a_short_jobs_stage_changes_share_its_final_write(rds, tmp_path, interval):
    h = Harness(rds, settings_for(tmp_path, QUEUE="q", STATUS_MIN_INTERVAL=interval), _Staged)
    push(rds, "q:warm")
    assert h.run_one() == Outcome.DONE  # every script loaded (a first EVALSHA answers NOSCRIPT)
    push(rds, "q:one")
    before = script_calls(rds)
    assert h.run_one() == Outcome.DONE
    calls = script_calls(rds) - before
    # claim + final write; written at once (interval 0) each stage status and the progress add one
    assert calls == (2 if interval else 6), calls
    data = rds.hgetall("q:one")
    assert data["status"] == Status.DONE and data["progress"] == "100" and data["output_url"] == "u"
    assert {"download_time", "predict_time", "save_time"} <= set(data)
    log = rds.lrange(keys.job_log("q:one"), 0, -1)
    assert any("fetched" in line for line in log) and any("stage save finished" in line for line in log)


def test_an_update_carries_the_deferred_status(rds, tmp_path):
    h = Harness(rds, settings_for(tmp_path, QUEUE="q", STATUS_MIN_INTERVAL=60), _Staged)
    push(rds, "q:u")
    claimed = h.broker.claim_next(1.0)
    job = Job(claimed.job, h.broker, h.services, status_interval=60)
    with job.stage("predict"):
        assert rds.hget("q:u", "status") == "started"  # waiting for a write to share
        job.update({"note": "x"})
        assert rds.hget("q:u", "status") == Status.PREDICTING and rds.hget("q:u", "note") == "x"
        assert job.due is None


def test_a_due_status_is_written_by_write_due_and_never_after_close(rds, tmp_path):
    h = Harness(rds, settings_for(tmp_path, QUEUE="q"), _Staged)
    push(rds, "q:d")
    claimed = h.broker.claim_next(1.0)
    woken = []
    job = Job(claimed.job, h.broker, h.services, status_interval=0.2, on_deferred=lambda: woken.append(1))
    job.progress(30)
    job.progress(40)  # within the same window: one wake-up, one write
    assert len(woken) == 1 and job.due is not None
    assert not job.write_due(h.broker, now=job.due - 0.1)  # not due yet
    assert rds.hget("q:d", "progress") is None
    assert job.write_due(h.broker, now=job.due)
    assert rds.hget("q:d", "progress") == "40" and job.due is None
    job.progress(60)
    fields, _lines = job.close()
    assert "progress" not in fields  # the final write sets it
    assert not job.write_due(h.broker, now=float("inf"))
    assert rds.hget("q:d", "progress") == "40"


def test_a_due_write_after_the_claim_was_lost_writes_nothing(rds, tmp_path):
    h = Harness(rds, settings_for(tmp_path, QUEUE="q"), _Staged)
    push(rds, "q:z")
    claimed = h.broker.claim_next(1.0)
    job = Job(claimed.job, h.broker, h.services, status_interval=0.2)
    job.progress(10)
    rds.hset("q:z", "claim", "another-workers-token")
    assert not job.write_due(h.broker, now=float("inf"))
    assert rds.hget("q:z", "progress") is None
    with pytest.raises(ClaimLost):
        job.update({"late": "1"})
    assert rds.hget("q:z", "late") is None


def test_a_long_stage_shows_while_it_runs_and_the_final_status_stays(rds, redis_server, procs, tmp_path):
    push(rds, "q:long", sleep=3.0)
    env = env_for(redis_server, QUEUE="q", CONSUMER_TYPE="tests.consumers_for_tests:RecordingConsumer",
                  ALLOW_ROOT="true", STATUS_MIN_INTERVAL="0.3", HEARTBEAT_INTERVAL="2", HEARTBEAT_TTL="6",
                  LOG_LEVEL="INFO")
    procs.append(start_worker(env, str(tmp_path / "w.log")))
    wait_until(lambda: rds.hget("q:long", "status") == "started", timeout=30, interval=0.005, message="claim")
    seen_at = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = rds.hget("q:long", "status")
        if status == Status.PREDICTING:
            seen_at = time.monotonic()
            break
        assert status == "started", status
        time.sleep(0.01)
    assert seen_at is not None, (tmp_path / "w.log").read_text()[-2000:]
    assert rds.get("test:results:q:long") is None  # seen while the stage still ran
    wait_until(lambda: rds.hget("q:long", "status") == "done", timeout=30, message="done")
    time.sleep(0.6)  # a deferred write, if any were left, would land by now
    data = rds.hgetall("q:long")
    assert data["status"] == "done" and data["progress"] == "100" and "predict_time" in data
