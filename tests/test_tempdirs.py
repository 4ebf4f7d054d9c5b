"""Issue 15 item 5: scratch folders of killed workers are swept at start; live workers' are kept.

Real processes: one is SIGKILLed holding two scratch folders, another stays alive holding one.
The sweep (in this process, and at the start of a real `redis-consumer consume`) removes exactly
the dead one's folders, whatever pid the next worker happens to get.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redis_consumer.utils import tempdirs
from tests.helpers.chaos_procs import WorkerProcess, worker_env
from tests.helpers.net import wait_until

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys, time
from redis_consumer.utils import tempdirs
paths = [tempdirs.make("rc-job-"), tempdirs.make("rc-zipin-")]
for p in paths:
    open(p + "/input.tif", "wb").write(b"x" * 1000)
print(" ".join(paths), flush=True)
time.sleep(600)
"""


def holder(tmpdir: Path) -> tuple[subprocess.Popen, list[str]]:
    """A process that made two scratch folders in `tmpdir` and now sleeps holding them."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    paths = proc.stdout.readline().split()
    assert len(paths) == 2 and all(Path(p).parent == tmpdir for p in paths)
    return proc, paths


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_sweep_removes_a_killed_workers_folders_and_keeps_the_live_ones(tmp_path, procs):
    dead, dead_paths = holder(tmp_path)
    live, live_paths = holder(tmp_path)
    procs += [dead, live]
    dead.send_signal(signal.SIGKILL)
    dead.wait(10)
    old_unlocked = tmp_path / "rc-job-old"  # from a version without lock files, long ago
    old_unlocked.mkdir()
    (old_unlocked / "x").write_bytes(b"x")
    os.utime(old_unlocked, (time.time() - 7200, time.time() - 7200))
    fresh_unlocked = tmp_path / "rc-zip-fresh"  # maybe a worker between mkdtemp and its lock
    fresh_unlocked.mkdir()
    other = tmp_path / "rc-worker-logs"  # not a scratch folder: never touched
    other.mkdir()
    os.utime(other, (time.time() - 7200, time.time() - 7200))
    mine = tempdirs.make("rc-job-")  # this process's own folder, in use
    try:
        removed = tempdirs.sweep(str(tmp_path), min_age=3600)
        assert sorted(removed) == sorted(dead_paths + [str(old_unlocked)])
        for p in dead_paths:
            assert not os.path.exists(p)
        for p in live_paths + [str(fresh_unlocked), str(other)]:
            assert os.path.isdir(p)
        assert os.path.isfile(os.path.join(live_paths[0], "input.tif"))
        assert tempdirs.sweep(str(tmp_path), min_age=3600) == []  # idempotent; the live one still holds
    finally:
        tempdirs.remove_later(mine)
    live.kill()
    live.wait(10)
    assert sorted(tempdirs.sweep(str(tmp_path), min_age=3600)) == sorted(live_paths)


def test_removal_releases_the_lock_only_when_the_folder_is_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(tempdirs.tempfile, "tempdir", str(tmp_path))
    path = tempdirs.make("rc-job-")
    assert path in tempdirs._HELD and tempdirs.sweep(str(tmp_path)) == []
    tempdirs.remove_later(path)
    wait_until(lambda: not os.path.exists(path) and path not in tempdirs._HELD, message="background removal")


@pytest.mark.timeout(120)
def test_a_starting_worker_sweeps_what_a_killed_worker_left(redis_server, tmp_path, procs):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    dead, dead_paths = holder(scratch)
    live, live_paths = holder(scratch)  # another worker of the same pod, still busy
    procs += [dead, live]
    dead.kill()
    dead.wait(10)
    worker = WorkerProcess(worker_env(REDIS_URL=redis_server.url, QUEUE="sweep", CONSUMER_TYPE="noop",
                                      TMPDIR=str(scratch), LOG_FORMAT="text"), log_dir=str(tmp_path)).start()
    try:
        wait_until(lambda: "removed 2 scratch folder(s)" in worker.log_path.read_text(), timeout=60,
                   message="the sweep's log line")
        assert not any(os.path.exists(p) for p in dead_paths)
        assert all(os.path.isdir(p) for p in live_paths)
        assert worker.alive()
    finally:
        worker.terminate(30)
