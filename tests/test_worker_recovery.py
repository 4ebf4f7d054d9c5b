"""Real worker processes against a real redis-server: kills, SIGTERM, poison jobs, Redis restarts."""

from __future__ import annotations

import signal
import time

from redis_consumer.queue import keys
from redis_consumer.utils.timestamps import parse_iso
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer, env_for
from tests.helpers.workers import start_worker

INTERVAL, TTL = 0.5, 2.0


def worker_env(server, **extra):
    settings = {
        "QUEUE": "q",
        "CONSUMER_TYPE": "tests.consumers_for_tests:RecordingConsumer",
        "HEARTBEAT_INTERVAL": str(INTERVAL),
        "HEARTBEAT_TTL": str(TTL),
        "EMPTY_QUEUE_TIMEOUT": "0.5",
        "RETRY_BACKOFF_CAP": "0.2",
    }
    settings.update(extra)
    return env_for(server, **settings)


def push(r, key, **fields):
    r.hset(key, mapping={"status": "new", **{k: str(v) for k, v in fields.items()}})
    r.lpush("q", key)


def statuses(r, job_keys):
    return [r.hget(k, "status") for k in job_keys]


def test_sigkill_mid_job_is_recovered_by_another_worker_once(rds, redis_server, procs, tmp_path):
    push(rds, "q:slow", sleep=60, sleep_attempts=1)
    a = start_worker(worker_env(redis_server), str(tmp_path / "a.log"))
    procs.append(a)
    wait_until(lambda: rds.hget("q:slow", "status") == "predicting", message="job to start")
    b = start_worker(worker_env(redis_server), str(tmp_path / "b.log"))
    procs.append(b)
    a.send_signal(signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: rds.hget("q:slow", "status") == "done", timeout=TTL + 10, message="recovery")
    data = rds.hgetall("q:slow")
    recovered_after = parse_iso(data["started_at"]).timestamp() - killed_at
    assert recovered_after <= TTL + 2 * INTERVAL + 0.5, recovered_after
    assert data["attempts"] == "2"
    assert rds.get("test:executions:q:slow") == "2"  # at-least-once execution ...
    assert rds.get("test:results:q:slow") == "1"  # ... but one result
    assert rds.get(keys.completed_counter("q")) == "1"


def test_poison_job_is_dead_lettered_while_others_finish(rds, redis_server, procs, tmp_path):
    push(rds, "q:poison", poison=1)
    good = [f"q:good{i}" for i in range(10)]
    for k in good:
        push(rds, k)
    env = worker_env(redis_server, MAX_ATTEMPTS="3")
    deadline = time.monotonic() + 60
    # a tiny supervisor that replaces dead workers, as a Deployment would
    live = [start_worker(env, str(tmp_path / "w0.log")), start_worker(env, str(tmp_path / "w1.log"))]
    procs.extend(live)
    restarts = 0
    while time.monotonic() < deadline:
        if rds.hget("q:poison", "status") == "failed" and statuses(rds, good) == ["done"] * 10:
            break
        for i, p in enumerate(live):
            if p.poll() is not None:
                live[i] = start_worker(env, str(tmp_path / f"w{restarts + 2}.log"))
                procs.append(live[i])
                restarts += 1
        time.sleep(0.05)
    data = rds.hgetall("q:poison")
    assert data["status"] == "failed" and data["failure_type"] == "system"
    assert "stopped responding" in data["reason"]
    assert data["attempts"] == "3"
    assert rds.lrange(keys.dead("q"), 0, -1) == ["q:poison"]
    assert statuses(rds, good) == ["done"] * 10
    assert restarts == 3


def test_sigterm_finishes_job_within_grace_and_exits_zero(rds, redis_server, procs, tmp_path):
    push(rds, "q:short", sleep=1.0)
    w = start_worker(worker_env(redis_server, SHUTDOWN_GRACE="10"), str(tmp_path / "w.log"))
    procs.append(w)
    wait_until(lambda: rds.hget("q:short", "status") == "predicting", message="job to start")
    push(rds, "q:next")
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    assert rds.hget("q:short", "status") == "done"
    assert rds.hget("q:next", "status") == "new"  # not claimed after SIGTERM
    assert rds.lrange("q", 0, -1) == ["q:next"]
    assert rds.zcard(keys.consumers("q")) == 0


def test_sigterm_requeues_job_that_outlives_grace(rds, redis_server, procs, tmp_path):
    push(rds, "q:long", sleep=60)
    push(rds, "q:behind")
    w = start_worker(worker_env(redis_server, SHUTDOWN_GRACE="0.5"), str(tmp_path / "w.log"))
    procs.append(w)
    wait_until(lambda: rds.hget("q:long", "status") == "predicting", message="job to start")
    w.send_signal(signal.SIGTERM)
    assert w.wait(15) == 0
    data = rds.hgetall("q:long")
    assert data["status"] == "new" and data["attempts"] == "0" and "claim" not in data
    assert rds.lindex("q", -1) == "q:long"  # back at the head, ahead of q:behind
    assert rds.llen("q") == 2
    assert not rds.keys("processing-q:*")


def test_sigterm_while_idle_exits_promptly(rds, redis_server, procs, tmp_path):
    w = start_worker(worker_env(redis_server, EMPTY_QUEUE_TIMEOUT="30"), str(tmp_path / "w.log"))
    procs.append(w)
    wait_until(lambda: rds.zcard(keys.consumers("q")) == 1, message="worker to register")
    time.sleep(0.3)
    w.send_signal(signal.SIGTERM)
    assert w.wait(10) == 0
    assert rds.zcard(keys.consumers("q")) == 0


def test_user_errors_and_system_errors_end_with_clear_reasons(rds, redis_server, procs, tmp_path):
    push(rds, "q:bad", user_error="The image is 5000x5000 pixels, larger than the 2048x2048 limit.")
    push(rds, "q:flaky", transient="model server unavailable")
    push(rds, "q:bug", crash="boom")
    push(rds, "q:weird-status")
    rds.hset("q:weird-status", "status", "exploded")
    push(rds, "q:fine")
    w = start_worker(worker_env(redis_server, MAX_ATTEMPTS="2"), str(tmp_path / "w.log"))
    procs.append(w)
    done = ["q:bad", "q:flaky", "q:bug", "q:weird-status", "q:fine"]
    wait_until(lambda: all(s in ("done", "failed") for s in statuses(rds, done)), timeout=30, message="all final")
    bad = rds.hgetall("q:bad")
    assert (bad["status"], bad["failure_type"]) == ("failed", "user")
    assert bad["reason"] == "The image is 5000x5000 pixels, larger than the 2048x2048 limit."
    flaky = rds.hgetall("q:flaky")
    assert (flaky["status"], flaky["failure_type"], flaky["attempts"]) == ("failed", "system", "2")
    assert "model server unavailable" in flaky["reason"] and "\n" not in flaky["reason"]
    bug = rds.hgetall("q:bug")
    assert bug["failure_type"] == "system" and "internal error (ValueError)" in bug["reason"]
    assert "boom" not in bug["reason"]  # the exception's own text stays in the worker log
    weird = rds.hgetall("q:weird-status")
    assert weird["failure_type"] == "user" and "exploded" in weird["reason"]
    assert rds.hget("q:fine", "status") == "done"
    assert set(rds.lrange(keys.dead("q"), 0, -1)) == {"q:flaky", "q:bug"}
    assert w.poll() is None  # the worker kept running through all of it


def test_redis_restart_loses_nothing(procs, tmp_path):
    server = RedisServer(appendonly=True).start()
    try:
        r = server.client()
        job_keys = [f"q:r{i}" for i in range(60)]
        for k in job_keys:
            push(r, k, sleep=0.05)
        env = worker_env(server)
        procs.extend(start_worker(env, str(tmp_path / f"w{i}.log")) for i in range(2))
        wait_until(lambda: r.get(keys.completed_counter("q")) and int(r.get(keys.completed_counter("q"))) >= 10,
                   message="some progress")
        server.restart()
        r = server.client()
        wait_until(lambda: statuses(r, job_keys) == ["done"] * 60, timeout=90, message="all jobs done after restart")
        assert all(p.poll() is None for p in procs)  # workers rode out the outage
        assert r.llen("q") == 0
        for k in job_keys:
            assert r.get(f"test:results:{k}") in ("1", "2")  # a job cut off by the restart may rerun
    finally:
        server.cleanup()


def test_bad_setting_exits_2_with_one_line(redis_server, tmp_path):
    import subprocess
    import sys

    from tests.helpers.workers import ROOT

    for var, value, expected in (
        ("REDIS_PORT", "abc", "REDIS_PORT must be a whole number, got 'abc'"),
        ("MAX_ATTEMPTS", "-1", "MAX_ATTEMPTS must be at least 1, got '-1'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of text, json, got 'xml'"),
        ("CONSUMER_TYPE", "nope", "CONSUMER_TYPE must be one of"),
        ("STORAGE_BUCKET", "ftp://bucket", "STORAGE_BUCKET"),
    ):
        env = worker_env(redis_server, **{var: value})
        proc = subprocess.run([sys.executable, str(ROOT / "consume_redis_events.py")], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 2, (var, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], proc.stderr
        if var == "CONSUMER_TYPE":
            assert "noop" in lines[0]
