"""idle_memory: the heap a job freed goes back to the OS when the queue runs dry, never between jobs.

The real-glibc check runs in a fresh interpreter under the malloc settings the image ships (glibc
reads them at start): there, freed heap stays resident until `went_idle()` trims it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redis_consumer import idle_memory
from redis_consumer.consumers.noop import NoopConsumer
from redis_consumer.idle_memory import IdleTrim
from redis_consumer.settings import Settings
from redis_consumer.worker import Worker
from tests.helpers.chaos_procs import submit

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "536870912",
                  "MALLOC_TOP_PAD_": "67108864", "MALLOC_ARENA_MAX": "2"}


class _Fake:
    """A resident set that grows by what the test says, and a trim that counts its calls."""

    def __init__(self, fail: bool = False) -> None:
        self.rss, self.calls, self.fail = 100 << 20, 0, fail

    def trim(self) -> None:
        self.calls += 1
        if self.fail:
            raise OSError("no")

    def resident(self) -> int:
        return self.rss


def test_trims_at_the_first_idle_moment_then_only_after_the_resident_set_grew():
    fake = _Fake()
    idle = IdleTrim(fake.trim, fake.resident, growth=4 << 20)
    assert idle.went_idle() and fake.calls == 1  # start-up's freed heap
    fake.rss += 3 << 20
    assert not idle.went_idle() and fake.calls == 1  # little growth: one /proc read, no trim
    fake.rss += 1 << 20
    assert idle.went_idle() and fake.calls == 2
    assert not idle.went_idle() and fake.calls == 2  # idle again, nothing new


def test_no_c_library_trim_no_proc_or_a_failing_trim_is_a_quiet_no_op():
    fake = _Fake()
    assert not IdleTrim(None, fake.resident).went_idle()
    assert not IdleTrim(fake.trim, lambda: None).went_idle() and fake.calls == 0
    failing = _Fake(fail=True)
    idle = IdleTrim(failing.trim, failing.resident)
    assert not idle.went_idle() and failing.calls == 1
    failing.rss += 64 << 20
    assert not idle.went_idle() and failing.calls == 1  # not tried again
    assert idle.trim is None


def test_registered_caches_are_dropped_before_each_trim_and_a_failing_one_is_skipped(monkeypatch):
    fake, order = _Fake(), []
    monkeypatch.setattr(idle_memory, "_RELEASERS", [])

    def broken() -> None:
        order.append("broken")
        raise RuntimeError("cannot")

    idle_memory.register(broken)
    idle_memory.register(lambda: order.append("cache"))
    idle = IdleTrim(lambda: order.append("trim"), fake.resident)
    assert idle.went_idle() and order == ["broken", "cache", "trim"]
    assert not idle.went_idle() and len(order) == 3  # no growth: nothing dropped either


def test_the_predict_buffer_pool_is_emptied_when_an_idle_worker_trims():
    from redis_consumer.tfserving import wire

    pool = wire.POOL  # the process's pool, registered when wire was imported
    pool.take(2 << 20)  # a request built and sent: nobody holds it any more
    pool.take(2 << 20)
    assert pool._bytes >= 2 << 20 and pool.hits >= 1  # kept warm for the next job
    assert IdleTrim(lambda: None, _Fake().resident).went_idle()
    assert pool._bytes == 0 and pool._free == {}


def test_an_idle_worker_drops_the_last_deepcell_jobs_labels(rds, tmp_path, monkeypatch):
    import gc
    import io

    import numpy as np
    import tifffile

    from redis_consumer.consumers.segmentation import SegmentationConsumer
    from tests.consumer_harness import Harness, LocalTF, settings_for
    from tests.consumer_harness import submit as upload_and_submit

    monkeypatch.setattr(idle_memory, "_RELEASERS", [])
    settings = settings_for(tmp_path)
    harness = Harness(rds, settings, SegmentationConsumer, tf=LocalTF())
    image = io.BytesIO()
    tifffile.imwrite(image, (np.random.default_rng(0).random((96, 96)) * 4000).astype(np.uint16))
    upload_and_submit(rds, settings, None, name="cells.tif", data=image.getvalue())
    assert harness.run_one() == "done"  # a kiosk job: NUCLEAR_MODEL through the deep watershed
    consumer = harness.consumer
    held = [arr for arr, _ in consumer._count_memo.values()]
    assert held and held[0].shape[:3] == (1, 96, 96)  # the labels, kept after the job until the next began
    del held
    assert IdleTrim(lambda: None, _Fake().resident).went_idle()
    assert consumer._count_memo == {}
    assert len(idle_memory._RELEASERS) == 1
    del harness, consumer
    gc.collect()
    IdleTrim(lambda: None, _Fake().resident).went_idle()
    assert idle_memory._RELEASERS == []  # held weakly: a consumer gone is forgotten


_FREE_THEN_IDLE = """
import json, sys
import numpy as np
from redis_consumer import idle_memory
def rss():
    return idle_memory.resident_bytes() / 2**20
idle_memory.went_idle(True)
blocks = [np.ones(1 << 17) for _ in range(96)]  # 96 MB in 1 MB arrays: heap, not mmap, here
before = rss()
del blocks
freed = rss()
trimmed = idle_memory.went_idle(sys.argv[1] == "on")
print(json.dumps({"before": before, "freed": freed, "after": rss(), "trimmed": trimmed}))
"""


def test_under_the_shipped_malloc_settings_freed_heap_stays_until_the_worker_goes_idle():
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **SHIPPED_MALLOC}
    got = {}
    for mode in ("on", "off"):
        out = subprocess.run([sys.executable, "-c", _FREE_THEN_IDLE, mode], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        got[mode] = json.loads(out.stdout)
    on, off = got["on"], got["off"]
    assert on["freed"] > on["before"] - 16  # freeing kept the pages (the shipped trim threshold)
    assert on["trimmed"] and on["after"] < on["freed"] - 64  # went_idle gave them back
    assert not off["trimmed"] and off["after"] > off["freed"] - 16  # IDLE_MALLOC_TRIM=false keeps them


@pytest.fixture
def counted(monkeypatch):
    """The process's trimmer replaced by one whose resident set grows 64 MB per look."""
    fake = _Fake()

    def growing() -> int:
        fake.rss += 64 << 20
        return fake.rss

    monkeypatch.setattr(idle_memory, "_PROCESS", IdleTrim(fake.trim, growing))
    return fake


@pytest.mark.parametrize("enabled", [True, False])
def test_the_worker_trims_once_its_queue_runs_dry_and_never_between_waiting_jobs(rds, redis_server, counted,
                                                                                  enabled):
    settings = Settings.from_env({}, REDIS_URL=redis_server.url, QUEUE="trimq", EMPTY_QUEUE_TIMEOUT=0.1,
                                 IDLE_MALLOC_TRIM=enabled)
    worker = Worker(settings, NoopConsumer)
    try:
        keys = [submit(rds, "trimq") for _ in range(3)]
        outcomes = [worker._step() for _ in keys]
        assert [rds.hget(k, "status") for k in keys] == ["done"] * 3 and None not in outcomes
        assert counted.calls == 0  # each next job was waiting: no trim on the busy path
        assert worker._step() is None  # the queue ran dry: the worker waited
        assert counted.calls == (1 if enabled else 0)
        key = submit(rds, "trimq")
        worker._step()  # it blocks for the next job, as the last final write saw an empty queue
        worker._step()
        # every wait on a queue believed empty trims if the resident set grew (here: always)
        assert rds.hget(key, "status") == "done" and counted.calls == (3 if enabled else 0)
    finally:
        worker.stopping.set()
        worker._wake.set()
