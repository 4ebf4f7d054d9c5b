"""The CLI against a real redis-server and a local `file://` bucket: round trips of every command."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from pathlib import Path

import pytest

from redis_consumer.queue import keys
from tests.cli_support import bucket_for, run_cli


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A `file://` bucket the CLI is pointed at (STORAGE_BUCKET)."""
    root = tmp_path / "bucket"
    root.mkdir()
    client = bucket_for(root)
    monkeypatch.setenv("STORAGE_BUCKET", root.as_uri())
    return client


@pytest.fixture
def env(redis_server, rds, bucket, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.delenv("REDIS_HOST", raising=False)
    return rds


def make_inputs(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"cells{i}.tif"
        p.write_bytes(b"II*\x00fake-tiff-%d" % i)
        paths.append(p)
    return paths


def finish(rds, key: str, status: str, **fields: str) -> None:
    rds.hset(key, mapping={"status": status, "finished_at": "2026-01-01T00:00:00.000000+00:00", **fields})


# -- submit -----------------------------------------------------------------------------------
def test_submit_writes_kiosk_job_hashes_and_uploads(env, bucket, tmp_path, capsys):
    files = make_inputs(tmp_path / "in", 3)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    (tmp_path / "in" / ".hidden.tif").write_bytes(b"x")
    code, out, err = run_cli(capsys, "submit", files[0], tmp_path / "in", "--queue", "segmentation",
                             "--model", "NuclearSegmentation:1", "--field", "channels=0")
    assert code == 0, err
    job_keys = out.split()
    assert len(job_keys) == 3  # the file named twice is submitted once; notes.txt and hidden files skipped
    assert env.lrange("segmentation", 0, -1) == list(reversed(job_keys))  # LPUSH: oldest at the right
    for key, path in zip(job_keys, files):
        queue, name, token = key.split(":")
        assert (queue, name, len(token)) == ("segmentation", path.name, 32)
        fields = env.hgetall(key)
        assert fields["status"] == "new"
        assert fields["original_name"] == path.name
        assert fields["model_name"] == "NuclearSegmentation" and fields["model_version"] == "1"
        assert fields["channels"] == "0"
        assert fields["input_file_name"].startswith("uploads/") and fields["input_file_name"].endswith(path.name)
        assert fields["created_at"].endswith("+00:00") and len(fields["created_at"].split(".")[1]) == 12
        assert bucket.exists(fields["input_file_name"])


def test_submit_glob_json_and_zip_goes_to_zip_queue(env, tmp_path, capsys):
    make_inputs(tmp_path / "in", 2)
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.tif", b"x")
    code, out, err = run_cli(capsys, "submit", str(tmp_path / "in" / "*.tif"), archive, "-q", "seg", "--json")
    assert code == 0, err
    job_keys = json.loads(out)
    assert len(job_keys) == 3
    assert job_keys[-1].startswith("seg-zip:batch.zip:")
    assert env.lrange("seg-zip", 0, -1) == [job_keys[-1]]
    assert env.llen("seg") == 2
    assert env.hget(job_keys[0], "model_name") == "NuclearSegmentation"  # SEGMENTATION_MODEL default
    assert "no live worker serves 'seg'" in err and "no live worker serves 'seg-zip'" in err


def test_submit_wait_with_a_real_worker(env, redis_server, tmp_path, capsys):
    """`--wait` against a noop worker subprocess: progress to the end, exit 0 when all are done."""
    import subprocess
    import sys

    from tests.helpers.redis_server import env_for

    worker = subprocess.Popen(
        [sys.executable, "-m", "redis_consumer.cli.main", "consume"],
        env=env_for(redis_server, QUEUE="waitq", CONSUMER_TYPE="noop", EMPTY_QUEUE_TIMEOUT="0.2"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        files = make_inputs(tmp_path / "in", 4)
        code, out, err = run_cli(capsys, "submit", *files, "--queue", "waitq", "--wait", "--timeout", "60")
        assert code == 0, err
        assert "4/4 jobs: 4 done, 0 failed" in err
        for key in out.split():
            assert env.hget(key, "status") == "done"
    finally:
        worker.terminate()
        worker.wait(20)


# -- status -----------------------------------------------------------------------------------
def test_status_exit_codes_and_json(env, capsys):
    env.hset("q:a:1", mapping={"status": "done", "output_url": "file:///x.zip"})
    env.hset("q:b:2", mapping={"status": "failed", "reason": "The image is empty."})
    env.hset("q:c:3", mapping={"status": "predicting", "progress": "40"})
    code, out, _ = run_cli(capsys, "status", "q:a:1")
    assert code == 0 and "output_url" in out and "file:///x.zip" in out
    assert run_cli(capsys, "status", "q:b:2")[0] == 1
    assert run_cli(capsys, "status", "q:c:3")[0] == 3
    assert run_cli(capsys, "status", "q:a:1", "q:c:3")[0] == 3
    assert run_cli(capsys, "status", "q:a:1", "q:b:2", "q:c:3")[0] == 1
    code, out, _ = run_cli(capsys, "status", "q:a:1", "q:b:2", "--json")
    data = json.loads(out)
    assert code == 1 and data["q:b:2"]["reason"] == "The image is empty."
    code, out, err = run_cli(capsys, "status", "q:nope:9")
    assert code == 4 and out == "" and err.count("\n") == 1 and "q:nope:9" in err
    env.rpush("q:list:1", "x")
    code, out, err = run_cli(capsys, "status", "q:list:1")
    assert code == 4 and "is a Redis list, not a job hash" in err


# -- results ----------------------------------------------------------------------------------
def _result_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_results_downloads_and_unpacks(env, bucket, tmp_path, capsys):
    local = _result_zip(tmp_path / "r.zip", {"cells_labels.tif": b"labels", "logs/job.log": b"line\n"})
    bucket.upload(str(local), "output/q_a_1.zip")
    finish(env, "q:a:1", "done", output_file_name="output/q_a_1.zip")
    code, out, err = run_cli(capsys, "results", "q:a:1", "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "cells_labels.tif").read_bytes() == b"labels"
    assert (tmp_path / "out" / "logs" / "job.log").read_text() == "line\n"
    assert len(out.split()) == 2


def test_results_refuses_unfinished_failed_and_unsafe(env, bucket, tmp_path, capsys):
    env.hset("q:r:1", mapping={"status": "predicting"})
    finish(env, "q:f:1", "failed", reason="The image has no pixels.")
    code, _, err = run_cli(capsys, "results", "q:r:1", "--out", tmp_path / "o")
    assert code == 3 and "not finished" in err
    code, _, err = run_cli(capsys, "results", "q:f:1", "--out", tmp_path / "o")
    assert code == 1 and "The image has no pixels." in err
    evil = _result_zip(tmp_path / "evil.zip", {"../escape.txt": b"x"})
    bucket.upload(str(evil), "output/evil.zip")
    finish(env, "q:e:1", "done", output_file_name="output/evil.zip")
    code, _, err = run_cli(capsys, "results", "q:e:1", "--out", tmp_path / "o")
    assert code == 1 and "unsafe path" in err
    assert not (tmp_path / "escape.txt").exists()


# -- watch ------------------------------------------------------------------------------------
def test_watch_once_counts_every_column(env, capsys):
    from redis_consumer.utils.timestamps import now_iso

    old = "2020-01-01T00:00:00.000000+00:00"
    env.hset("wq:old:1", mapping={"status": "new", "created_at": old})
    env.hset("wq:new:2", mapping={"status": "new", "created_at": now_iso()})
    env.lpush("wq", "wq:old:1", "wq:new:2")
    env.lpush(keys.processing("wq", "w1"), "wq:x:3")
    env.lpush(keys.dead("wq"), "wq:d:4")
    sec, _ = env.time()
    env.zadd(keys.consumers("wq"), {"w1": sec + 30, "gone": sec - 30})
    env.sadd(keys.QUEUES_SET, "wq")
    env.set(keys.completed_counter("wq"), 7)
    code, out, err = run_cli(capsys, "watch", "--once", "--json")
    assert code == 0, err
    row = json.loads(out)["queues"][0]
    assert row["queue"] == "wq"
    assert (row["waiting"], row["in_flight"], row["dead"], row["consumers"], row["finished"]) == (2, 1, 1, 1, 7)
    assert row["oldest_age_seconds"] > 3600 * 24
    code, out, _ = run_cli(capsys, "watch", "--once", "--queues", "wq")
    assert code == 0 and out.splitlines()[0].split() == ["queue", "waiting", "in-flight", "dead", "consumers",
                                                          "jobs/min", "oldest"]
    assert out.splitlines()[2].split()[:5] == ["wq", "2", "1", "1", "1"]


def test_watch_rate_between_refreshes(env):
    from redis_consumer.cli.watch import _rate, queue_stats

    env.set(keys.completed_counter("rq"), 10)
    first = queue_stats(env, "rq")
    env.set(keys.completed_counter("rq"), 16)
    second = queue_stats(env, "rq")
    second["time"] = first["time"] + 30.0
    assert _rate(first, second) == pytest.approx(12.0)


# -- dead -------------------------------------------------------------------------------------
def _dead_job(rds, queue: str, name: str) -> str:
    key = f"{queue}:{name}:0"
    rds.hset(key, mapping={"status": "failed", "failure_type": "system", "attempts": "3", "claim": "t",
                           "reason": "The job kept killing its worker."})
    rds.expire(key, 100)
    rds.lpush(keys.dead(queue), key)
    return key


def test_dead_list_requeue_purge(env, capsys):
    a, b, c = (_dead_job(env, "dq", n) for n in ("a", "b", "c"))
    code, out, _ = run_cli(capsys, "dead", "list", "--queue", "dq", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["key"] for r in rows] == [c, b, a]
    assert rows[0]["reason"] == "The job kept killing its worker."
    code, out, _ = run_cli(capsys, "dead", "requeue", "--queue", "dq", a)
    assert code == 0 and "1 job(s) requeued" in out
    fields = env.hgetall(a)
    assert fields["status"] == "new" and fields["attempts"] == "0"
    assert "reason" not in fields and "claim" not in fields and env.ttl(a) == -1
    assert env.lrange("dq", 0, -1) == [a] and a not in env.lrange(keys.dead("dq"), 0, -1)
    code, _, err = run_cli(capsys, "dead", "purge", "--queue", "dq")
    assert code == 2 and "--yes" in err
    code, out, _ = run_cli(capsys, "dead", "purge", "--queue", "dq", "--yes", "--json")
    assert code == 0 and json.loads(out)["moved"] == 2
    assert not env.exists(b, c, keys.dead("dq"))
    code, out, _ = run_cli(capsys, "dead", "requeue", "--queue", "dq", "dq:zz:0")
    assert code == 1 and "skipped" in out
    code, out, _ = run_cli(capsys, "dead", "list", "--queue", "dq")
    assert code == 0 and "no dead jobs" in out


def test_dead_requeue_of_a_zip_child_keeps_the_parent_exact(env, capsys):
    """A dead child was counted failed by its waiting parent; requeued, it must not count twice."""
    env.hset("dq-zip:p", mapping={"status": "waiting", "children_total": 2, "children_done": 1,
                                  "children_failed": 0})
    child = _dead_job(env, "dq", "child")
    env.hset(child, mapping={"parent": "dq-zip:p", "parent_queue": "dq-zip"})
    env.hincrby("dq-zip:p", "children_failed", 1)  # as the dead-letter step does
    assert run_cli(capsys, "dead", "requeue", "--queue", "dq", child)[0] == 0
    assert env.hget("dq-zip:p", "children_failed") == "0"
    assert env.hget(child, "parent") == "dq-zip:p"
    # a child of a parent that already ended runs on its own
    env.hset("dq-zip:p", "status", "done")
    orphan = _dead_job(env, "dq", "orphan")
    env.hset(orphan, mapping={"parent": "dq-zip:p", "parent_queue": "dq-zip"})
    assert run_cli(capsys, "dead", "requeue", "--queue", "dq", orphan)[0] == 0
    assert env.hget(orphan, "parent") is None and env.hget("dq-zip:p", "children_failed") == "0"


# -- logs -------------------------------------------------------------------------------------
def test_logs_prints_and_follows_until_final(env, capsys):
    key = "lq:cells.tif:1"
    env.hset(key, mapping={"status": "predicting"})
    env.rpush(keys.job_log(key), "t1 claimed by w (attempt 1)", "t2 stage download started")
    code, out, _ = run_cli(capsys, "logs", key)
    assert code == 0 and out.splitlines() == ["t1 claimed by w (attempt 1)", "t2 stage download started"]
    code, out, _ = run_cli(capsys, "logs", key, "--json")
    assert code == 0 and json.loads(out) == ["t1 claimed by w (attempt 1)", "t2 stage download started"]
    assert run_cli(capsys, "logs", key, "--json", "--follow")[0] == 2

    def finish_later():
        time.sleep(0.5)
        env.rpush(keys.job_log(key), "t3 stage predict finished in 0.1s", "t4 done in 0.5s")
        env.hset(key, "status", "done")

    thread = threading.Thread(target=finish_later)
    thread.start()
    code, out, _ = run_cli(capsys, "logs", key, "--follow", "--interval", "0.05", "--timeout", "30")
    thread.join()
    assert code == 0
    assert out.splitlines()[-2:] == ["t3 stage predict finished in 0.1s", "t4 done in 0.5s"]
    assert len(out.splitlines()) == 4


def test_logs_new_lines_after_trim():
    from redis_consumer.cli.logs import new_lines

    assert new_lines("b", ["a", "b", "c"]) == ["c"]
    assert new_lines("gone", ["x", "y"]) == ["x", "y"]
    assert new_lines(None, ["x"]) == ["x"]


# -- config and progress --------------------------------------------------------------------------
def test_config_markdown_is_the_settings_table(capsys):
    from redis_consumer.cli.config import markdown as markdown_table

    code, out, _ = run_cli(capsys, "config", "--markdown")
    assert code == 0 and out.strip() == markdown_table()


def test_config_masks_secrets(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0")
    code, out, _ = run_cli(capsys, "config", "--json")
    assert code == 0 and "hunter2" not in out and json.loads(out)["REDIS_URL"] == "***"


def test_progress_bar_lines():
    from redis_consumer.cli.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(4, stream=stream)
    bar.update(1, 0, 2)
    bar.update(3, 1, 0)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[") and "1/4 jobs: 1 done, 0 failed, 2 running" in lines[0]
    assert "4/4 jobs: 3 done, 1 failed" in lines[-1] and "ETA 0s" in lines[-1]


# -- the real pipeline ----------------------------------------------------------------------------
@pytest.mark.slow
def test_round_trip_with_a_segmentation_worker(env, redis_server, tmp_path, capsys, monkeypatch):
    """submit --wait -> status -> results -> logs -> watch against a real worker and dev model server."""
    import subprocess
    import sys

    from redis_consumer.demo.images import write_images
    from tests.helpers.model_server import ModelServer
    from tests.helpers.redis_server import env_for

    images = list(write_images(tmp_path / "in", 2, size=96))
    with ModelServer() as model:
        worker = subprocess.Popen(
            [sys.executable, "-m", "redis_consumer.cli.main", "consume"],
            env=env_for(redis_server, QUEUE="cells", CONSUMER_TYPE="segmentation", EMPTY_QUEUE_TIMEOUT="0.2",
                        TF_HOST="127.0.0.1", TF_PORT=str(model.port),
                        STORAGE_BUCKET=(tmp_path / "bucket").as_uri()),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            code, out, err = run_cli(capsys, "submit", *images, "--queue", "cells", "--wait", "--timeout", "90")
            assert code == 0, err
            first = out.split()[0]
            code, out, _ = run_cli(capsys, "status", *out.split(), "--json")
            assert code == 0 and all(f["status"] == "done" for f in json.loads(out).values())
            code, out, err = run_cli(capsys, "results", first, "--out", tmp_path / "res")
            assert code == 0, err
            names = {Path(p).name for p in out.split()}
            assert "results.json" in names and "log.txt" in names
            assert any(n.endswith("_labels.tif") for n in names)
            code, out, _ = run_cli(capsys, "logs", first)
            assert code == 0 and "stage predict started" in out and "done in" in out
            code, out, _ = run_cli(capsys, "watch", "--once", "--json", "--queues", "cells")
            row = json.loads(out)["queues"][0]
            assert (row["waiting"], row["in_flight"], row["finished"], row["consumers"]) == (0, 0, 2, 1)
        finally:
            worker.terminate()
            worker.wait(20)
