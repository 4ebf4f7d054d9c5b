"""The consumer API and the worker's outcomes against a real redis-server: the Job a consumer sees,
JobTimeout that cannot be swallowed, unreadable fields, attempts used up at the claim, vanished
and lost claims, and the one door into Redis."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest

from redis_consumer.consumers import Consumer, Job
from redis_consumer.errors import JobTimeout, UserError
from redis_consumer.queue import Status, keys
from redis_consumer.queue.broker import Broker
from redis_consumer.runner import Outcome
from tests.consumer_harness import Harness, settings_for
from tests.helpers.net import wait_final, wait_until
from tests.helpers.redis_server import RedisServer, env_for
from tests.helpers.workers import start_worker

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "redis_consumer"


def push(r, key, queue="q", **fields):
    r.hset(key, mapping={"status": "new", **fields})
    r.lpush(queue, key)


# -- one door into Redis ---------------------------------------------------------------------
def test_lua_lives_only_in_queue_and_consumers_do_not_import_redis():
    out = subprocess.run(["grep", "-rnE", "eval|register_script|EVALSHA", str(PKG)], capture_output=True,
                         text=True, check=False).stdout
    outside = [line for line in out.splitlines() if not line.startswith(str(PKG / "queue"))]
    assert not [line for line in outside if re.search(r"\beval\b|EVAL|register_script", line)], outside
    for path in (PKG / "consumers").glob("*.py"):
        assert not re.search(r"^\s*(import redis|from redis\b)", path.read_text(), re.MULTILINE), path
    for path in (PKG / "queue" / "lua").glob("*.lua"):
        head = path.read_text().split("\n", 1)[0]
        assert head.startswith("-- "), path  # every script opens with its header comment
    assert not [p for p in PKG.glob("**/*.py") if "redis.call(" in p.read_text()]  # no Lua left in Python


def test_kit_runs_on_a_real_redis_too(redis_server, rds):
    from redis_consumer.consumers.noop import NoopConsumer
    from redis_consumer.testing import run_job

    run = run_job(NoopConsumer, {"original_name": "x.tif"}, redis_url=redis_server.url)
    assert run.outcome == "done" and run.status == "done" and rds.hget(run.key, "status") == "done"
    assert any("claimed by" in line for line in run.log) and run.files == {}


def test_scripts_survive_script_flush(rds):
    push(rds, "q:a")
    b = Broker(rds, "q", "w")
    rds.script_flush()  # e.g. Redis restarted without persistence: EVALSHA answers NOSCRIPT
    job = b.claim_next(1).job
    assert b.finish(job, "done", {}) == 1 and rds.hget("q:a", "status") == "done"


# -- the claim survives what a producer can write --------------------------------------------
def test_claim_dead_letters_a_job_whose_attempts_are_used_up(rds):
    push(rds, "q:tired", attempts="3")
    push(rds, "q:fresh")
    b = Broker(rds, "q", "w", max_attempts=3)
    res = b.claim_next(1)
    assert res.outcome == "dead" and res.job is None
    data = rds.hgetall("q:tired")
    assert data["status"] == "failed" and data["failure_type"] == "system" and data["attempts"] == "3"
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:tired"]
    assert rds.llen(b.processing_key) == 0
    assert b.claim_next(1).key == "q:fresh"


def test_release_after_an_outage_gives_the_attempt_back(rds):
    push(rds, "q:cut")
    b = Broker(rds, "q", "w", max_attempts=1)
    assert b.claim_next(1).job.attempts == 1
    assert b.release_all(uncount=True) == 1  # a Redis outage cut the job short
    assert rds.hget("q:cut", "attempts") == "0" and rds.hget("q:cut", "claim") is None
    assert b.claim_next(1).outcome == "ok"  # not dead-lettered: the outage was not the job's fault
    assert b.release_all() == 1  # any other interruption counts the attempt...
    assert b.claim_next(1).outcome == "dead"  # ...so a job that keeps interrupting its worker ends


@pytest.mark.parametrize("garbage", ["abc", "2.5", "-7", ""])
def test_claim_survives_garbage_in_attempts(rds, garbage):
    push(rds, "q:g", attempts=garbage)
    res = Broker(rds, "q", "w", max_attempts=3).claim_next(1)
    assert res.outcome == "ok" and res.job.attempts == 1


def test_unreadable_field_fails_as_user_error_and_next_job_finishes(rds, redis_server, procs, tmp_path):
    raw = redis_server.client(decode_responses=False)
    raw.hset("q:bad", mapping={b"status": b"new", b"channels": b"0,\xff"})
    raw.lpush("q", b"q:bad")
    raw.hset(b"q:bad-key-\xff", mapping={b"status": b"new"})
    raw.lpush("q", b"q:bad-key-\xff")
    push(rds, "q:good")
    env = env_for(redis_server, QUEUE="q", CONSUMER_TYPE="tests.consumers_for_tests:RecordingConsumer",
                  EMPTY_QUEUE_TIMEOUT="0.5", MAX_ATTEMPTS="2")
    worker = start_worker(env, str(tmp_path / "w.log"))
    procs.append(worker)
    wait_until(lambda: raw.hget(b"q:bad", b"status") in (b"done", b"failed"), timeout=30, message="bad job final")
    bad = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.hgetall(b"q:bad").items()}
    assert bad["status"] == "failed" and bad["failure_type"] == "user", bad
    assert "'channels'" in bad["reason"] and "UTF-8" in bad["reason"] and "\n" not in bad["reason"]
    assert wait_final(rds, "q:good")["status"] == "done"
    wait_until(lambda: raw.lrange("dead-q", 0, -1) == [b"q:bad-key-\xff"], message="bad key set aside")
    assert raw.hget(b"q:bad-key-\xff", b"status") == b"failed"
    assert worker.poll() is None, (tmp_path / "w.log").read_text()[-3000:]
    assert "Traceback" not in (tmp_path / "w.log").read_text()


# -- JobTimeout cannot be swallowed ----------------------------------------------------------
def test_consumer_swallowing_exceptions_still_times_out_cleanly(rds, redis_server, procs, tmp_path):
    assert not issubclass(JobTimeout, Exception)
    push(rds, "q:stubborn", swallow="1")
    env = env_for(redis_server, QUEUE="q", CONSUMER_TYPE="tests.consumers_for_tests:SwallowingConsumer",
                  EMPTY_QUEUE_TIMEOUT="0.5", JOB_TIMEOUT="1", MAX_ATTEMPTS="1", HEARTBEAT_INTERVAL="0.2",
                  SHUTDOWN_GRACE="30")
    worker = start_worker(env, str(tmp_path / "w.log"))
    procs.append(worker)
    data = wait_final(rds, "q:stubborn", timeout=30)
    assert data["status"] == "failed" and data["failure_type"] == "system", data
    assert "JOB_TIMEOUT" in data["reason"], data
    push(rds, "q:next")
    assert wait_final(rds, "q:next")["status"] == "done"
    assert worker.poll() is None, (tmp_path / "w.log").read_text()[-3000:]  # alive: no exit 70
    assert rds.get("test:executions:q:stubborn") == "1"
    assert "stuck past JOB_TIMEOUT" not in (tmp_path / "w.log").read_text()


# -- the Job a consumer sees -----------------------------------------------------------------
class _JobApiConsumer(Consumer):
    name = "api"
    seen: dict = {}  # noqa: RUF012 - what the last job showed, for the assertions

    def consume(self, job: Job):
        type(self).seen = {"key": job.key, "attempts": job.attempts, "left": job.time_left(),
                           "storage": job.services.storage is self.storage}
        with job.stage("predict"):
            job.progress(40)
            assert job.fields["status"] == "started"
        with job.stage("tidy-up"):  # not a known stage: timed and logged, status untouched
            job.log("tidying")
        job.update({"custom": "1"})
        if job.fields.get("bad"):
            raise UserError("The job's bad field is set; clear it and resubmit.")
        return {"answer": 42}


def test_job_api_stages_progress_update_and_result_fields(rds, tmp_path):
    h = Harness(rds, settings_for(tmp_path, QUEUE="q", JOB_TIMEOUT=60), _JobApiConsumer)
    push(rds, "q:one")
    assert h.run_one() == Outcome.DONE == "done"
    data = rds.hgetall("q:one")
    assert data["status"] == Status.DONE and data["answer"] == "42" and data["custom"] == "1"
    assert "predict_time" in data and "tidy-up_time" in data and data["progress"] == "100"
    assert _JobApiConsumer.seen["key"] == "q:one" and _JobApiConsumer.seen["attempts"] == 1
    assert 0 < _JobApiConsumer.seen["left"] <= 60 and _JobApiConsumer.seen["storage"]
    log = rds.lrange(keys.job_log("q:one"), 0, -1)
    assert any("tidying" in line for line in log) and any("done in" in line for line in log)
    push(rds, "q:two", bad="1")
    assert h.run_one() == "failed"
    assert rds.hget("q:two", "reason") == "The job's bad field is set; clear it and resubmit."


class _Vanishing(Consumer):
    name = "vanishing"
    client = None
    takeover = False

    def consume(self, job: Job):
        job.log("before")
        job.flush()
        if type(self).takeover:
            self.client.hset(job.key, "claim", "another-workers-token")
        else:
            self.client.delete(job.key)
        try:
            with job.stage("predict"):  # the stage's status waits (STATUS_MIN_INTERVAL); the update writes
                job.update({"note": "zombie"})
        except Exception:  # noqa: BLE001, S110 - a careless plug-in swallows ClaimLost: still lost
            pass
        job.log("after the claim was gone")
        return {"output_url": "zombie"}


@pytest.mark.parametrize("takeover", [False, True])
def test_vanished_and_lost_claims_write_nothing(rds, tmp_path, caplog, takeover):
    _Vanishing.client, _Vanishing.takeover = rds, takeover
    h = Harness(rds, settings_for(tmp_path, QUEUE="q"), _Vanishing)
    push(rds, "q:v")
    with caplog.at_level(logging.WARNING):
        assert h.run_one() == "lost"
    text = caplog.text
    if takeover:
        assert "claim lost to another worker" in text and "vanished" not in text
        assert rds.hget("q:v", "output_url") is None and rds.hget("q:v", "status") == "started"
    else:
        assert "vanished" in text and "claim lost to another worker" not in text
        assert not rds.exists("q:v")  # not recreated by a late write
    log = rds.lrange(keys.job_log("q:v"), 0, -1)
    assert any("before" in line for line in log)
    assert not any("after the claim" in line or "stage predict" in line for line in log), log


# -- submit under OOM ------------------------------------------------------------------------
def test_submit_under_redis_oom_prints_one_line(tmp_path, monkeypatch, capsys):
    from tests.cli_support import run_cli

    server = RedisServer(appendonly=False, extra=["--maxmemory", "1", "--maxmemory-policy", "noeviction"]).start()
    try:
        (tmp_path / "bucket").mkdir()
        monkeypatch.setenv("STORAGE_BUCKET", (tmp_path / "bucket").as_uri())
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.delenv("REDIS_HOST", raising=False)
        image = tmp_path / "cells.tif"
        image.write_bytes(b"II*\x00fake")
        code, _out, err = run_cli(capsys, "submit", image, "--queue", "seg")
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "out of memory" in lines[0], err
        assert not re.search(r"[0-9a-f]{40}", err), err
    finally:
        server.cleanup()


# -- the tutorial's code runs as written -----------------------------------------------------
def test_consumers_md_tutorial_consumer_and_test_run(tmp_path, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    text = (ROOT / "docs" / "consumers.md").read_text()
    section = text[text.index("### End to end"):text.index("### A model consumer")]
    consumer_src, test_src = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    lines = [line for src in (consumer_src, test_src) for line in src.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert len(lines) < 40, len(lines)
    (tmp_path / "brightness.py").write_text(consumer_src)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    exec(compile(test_src, "test_brightness.py", "exec"), namespace)  # noqa: S102 - the docs' own test
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), 120, np.uint8)).save(buf, format="PNG")
    namespace["test_brightness"](buf.getvalue())
    from redis_consumer.testing import run_job

    black = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(black, format="PNG")
    run = run_job(namespace["BrightnessConsumer"], inputs={"dark.png": black.getvalue()})
    assert run.status == "failed" and run.hash["reason"].startswith("The image is completely black")
