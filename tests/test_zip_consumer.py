"""Zip fan-out / fan-in through the real Redis protocol: mixed files, slip, bombs, empty, kill mid-fan-out."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import tifffile

from redis_consumer.consumers import zip_consumer
from redis_consumer.consumers.segmentation import SegmentationConsumer
from redis_consumer.consumers.zip_consumer import ZipConsumer
from redis_consumer.utils.zip_layout import FlatLayout
from tests.consumer_harness import (
    Harness,
    LocalTF,
    bucket_dir,
    open_result,
    settings_for,
    submit,
)
from tests.helpers.kiosk_frontend import KioskFrontend
from tests.test_consumers_postprocess import k_disks


def tif_bytes(k: int, size: int = 64) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, k_disks(k, size=size, radius=5, seed=k).astype(np.uint16))
    return buf.getvalue()


def zip_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def pair(rds, tmp_path):
    settings = settings_for(tmp_path, MAX_ZIP_RATIO=50.0)
    tf = LocalTF()
    return Harness(rds, settings, ZipConsumer, consumer_id="zip-w"), Harness(rds, settings, SegmentationConsumer, tf=tf)


def run_all(zips: Harness, seg: Harness, rounds: int = 5) -> None:
    for _ in range(rounds):
        if not zips.drain() + seg.drain():
            return


def test_mixed_zip_fans_out_and_in_with_failures_listed(pair, rds):
    zips, seg = pair
    data = zip_bytes([
        ("a/one.tif", tif_bytes(1)), ("two.tif", tif_bytes(4)), ("three.tif", tif_bytes(9)),
        ("broken.tif", b"II*\x00" + b"\x00" * 30), ("readme.txt", b"hello"), ("../escape.tif", tif_bytes(1)),
        ("inner.zip", zip_bytes([("x.tif", b"1")])),
    ])
    key = submit(rds, zips.settings, None, queue="seg-zip", name="batch.zip", data=data, model_name="NuclearSegmentation",
                 model_version="1")
    assert zips.run_one() == "parked"
    parent = rds.hgetall(key)
    assert parent["status"] == "waiting" and parent["children_total"] == "4"
    children = rds.lrange("children:" + key, 0, -1)
    # the kiosk's parent fields at fan-out (KRC base_consumer.py:748-763)
    assert parent["children"].split(",") == children and parent["total_jobs"] == "4" and parent["progress"] == "0"
    assert float(parent["children_upload_time"]) > 0
    assert rds.llen("seg") == 4 and sorted(rds.lrange("seg", 0, -1)) == sorted(children)
    child = rds.hgetall(children[0])
    assert child["parent"] == key and child["parent_queue"] == "seg-zip" and child["model_name"] == "NuclearSegmentation"
    assert child["status"] == "new" and child["original_name"] == "a/one.tif"
    assert children[0].startswith("seg:") and children[0].endswith(":0:one.tif")
    assert seg.drain() == ["done", "done", "done", "failed"]
    assert rds.hget(key, "progress") == "100"
    assert rds.lrange("seg-zip", 0, -1) == [key]  # requeued by the last child's finish, nobody polled
    assert zips.run_one() == "done"
    parent = rds.hgetall(key)
    assert parent["status"] == "done" and parent["children_done"] == "3" and parent["children_failed"] == "1"
    broken = [c for c in children if c.endswith(":broken.tif")]
    assert parent["children:failed"] == broken[0] and set(parent["children:done"].split(",")) == set(children) - set(broken)
    page = KioskFrontend.page_failures(parent["failures"])  # what the page's query-string parse reads
    assert list(page) == broken and "corrupt" in page[broken[0]]
    assert float(parent["cleanup_time"]) > 0 and parent["total_jobs"] == "4"
    for name in ("prediction_time", "postprocess_time", "upload_time", "download_time", "total_time",
                 "predict_retries"):  # the done children's, comma-joined (KRC base_consumer.py:673-701)
        assert len([float(v) for v in parent[name].split(",")]) == 3, name
    zf = open_result(zips.settings, parent)
    names = zf.namelist()
    assert {"failures.json", "results.json", "log.txt"} <= set(names) and len(set(names)) == len(names)
    # flat, mirroring the archive: a/one.tif's files under a/, named after the input; per-child extras prefixed
    by_child = {c["name"]: c["files"] for c in json.loads(zf.read("results.json"))["children"]}
    assert set(by_child) == {"a/one.tif", "two.tif", "three.tif", "broken.tif"} and by_child["broken.tif"] == []
    assert {"a/one_results.json", "a/one_log.txt", "two_results.json", "three_log.txt"} <= set(names)
    for name, files in by_child.items():
        folder, stem = ("a/", "one") if name == "a/one.tif" else ("", name[:-4])
        assert all(f.startswith(folder + stem) and "/" not in f[len(folder):] for f in files), files
    tifs = [n for n in names if n.endswith(".tif")]
    assert {t.split("_")[0] for t in tifs} == {"a/one", "two", "three"}
    for tif in tifs:  # each label image has its input's size
        assert tifffile.imread(io.BytesIO(zf.read(tif))).shape[-2:] == (64, 64)
    failures = json.loads(zf.read("failures.json"))
    assert [f["name"] for f in failures["failed"]] == ["broken.tif"]
    assert "corrupt" in failures["failed"][0]["reason"]
    skipped = {s["name"]: s["reason"] for s in failures["skipped"]}
    assert set(skipped) == {"readme.txt", "../escape.tif", "inner.zip"}
    log_text = zf.read("log.txt").decode()
    assert "fan-out" in log_text and "fan-in" in log_text
    for c in children:  # children expire with the parent
        assert 0 < rds.ttl(c) <= zips.settings.EXPIRE_TIME
    # nothing was written outside the bucket by the '..' entry
    assert not (bucket_dir(zips.settings).parent / "escape.tif").exists()


@pytest.mark.parametrize("entries,match", [
    ([], "empty"),
    ([("notes.txt", b"x"), ("../../etc/passwd.tif", b"root")], "no images"),
    ([("bomb.tif", b"\x00" * 2_000_000)], "zip bomb"),
])
def test_archives_without_usable_images_fail_with_a_reason(pair, rds, entries, match):
    zips, _ = pair
    key = submit(rds, zips.settings, None, queue="seg-zip", name="x.zip", data=zip_bytes(entries))
    assert zips.run_one() == "failed"
    job = rds.hgetall(key)
    assert job["failure_type"] == "user" and match in job["reason"], job["reason"]
    assert rds.llen("seg") == 0


def test_not_a_zip_and_too_many_entries(pair, rds, tmp_path):
    zips, _ = pair
    key = submit(rds, zips.settings, None, queue="seg-zip", name="y.zip", data=b"not a zip at all")
    assert zips.run_one() == "failed"
    assert "not a readable zip" in rds.hget(key, "reason")
    small = Harness(rds, settings_for(tmp_path, MAX_ZIP_ENTRIES=2), ZipConsumer)
    key = submit(rds, small.settings, None, queue="seg-zip", name="z.zip",
                 data=zip_bytes([(f"{i}.tif", tif_bytes(1)) for i in range(3)]))
    assert small.run_one() == "failed"
    assert "MAX_ZIP_ENTRIES" in rds.hget(key, "reason")


def test_all_children_failing_fails_the_parent(pair, rds):
    zips, seg = pair
    key = submit(rds, zips.settings, None, queue="seg-zip", name="bad.zip",
                 data=zip_bytes([("a.tif", b"II*\x00garbage!"), ("b.png", b"\x89PNG\r\n\x1a\nxx")]))
    run_all(zips, seg)
    job = rds.hgetall(key)
    assert job["status"] == "failed" and "All 2 image(s)" in job["reason"] and "\n" not in job["reason"]
    # the page shows only `reason` on failed; `failures` still names each child's (kiosk format)
    page = KioskFrontend.page_failures(job["failures"])
    assert sorted(page) == sorted(rds.lrange("children:" + key, 0, -1)) and all(page.values())
    assert job["children:done"] == "" and len(job["children:failed"].split(",")) == 2


class Killed(BaseException):
    """Stands in for SIGKILL: escapes every handler, nothing is written after it."""


def test_worker_killed_during_fan_out_creates_no_duplicates(pair, rds, tmp_path, monkeypatch):
    zips, seg = pair
    monkeypatch.setattr(zip_consumer, "BATCH", 2)
    key = submit(rds, zips.settings, None, queue="seg-zip", name="five.zip",
                 data=zip_bytes([(f"img{i}.tif", tif_bytes(i + 1)) for i in range(5)]))
    real = zips.broker._fanout  # the fan-out Lua step now belongs to the broker
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Killed()
        return real(*args, **kwargs)

    zips.broker._fanout = dying
    with pytest.raises(Killed):
        zips.run_one()
    assert rds.llen("seg") == 2  # first batch pushed before the "kill"
    assert seg.run_one() == "done"  # a child may even finish before the parent is recovered
    # the dead worker's claim is recovered like the reaper does: back to the queue, status new
    zips.broker.heartbeat_ttl = 0.001
    zips.broker.heartbeat()
    import time

    time.sleep(0.05)
    rescuer = Harness(rds, zips.settings, ZipConsumer, consumer_id="zip-rescuer")
    assert rescuer.broker.reap(1000)[0] == 1
    assert rescuer.run_one() == "parked"
    queued = rds.lrange("seg", 0, -1)
    assert len(queued) == 4 and len(set(queued)) == 4  # 5 children, 1 already done, none twice
    assert rds.llen("children:" + key) == 5
    run_all(rescuer, seg)
    job = rds.hgetall(key)
    assert job["status"] == "done" and job["children_done"] == "5", job
    names = open_result(zips.settings, job).namelist()
    assert {n.split("_")[0] for n in names if n.endswith(".tif")} == {f"img{i}" for i in range(5)}


def test_recovered_waiting_parent_is_not_fanned_out_twice(pair, rds):
    zips, seg = pair
    key = submit(rds, zips.settings, None, queue="seg-zip", name="two.zip",
                 data=zip_bytes([("a.tif", tif_bytes(1)), ("b.tif", tif_bytes(2))]))
    assert zips.run_one() == "parked"
    # a parent that lost its fan-in claim comes back as `new` with its children already made
    rds.hset(key, "status", "new")
    rds.hdel(key, "children")  # as if the first fan-out died between creating the children and parking
    rds.lpush("seg-zip", key)
    assert zips.run_one() == "parked"
    assert rds.llen("seg") == 2
    assert rds.hget(key, "children").split(",") == rds.lrange("children:" + key, 0, -1)
    run_all(zips, seg)
    assert rds.hget(key, "status") == "done"


def test_dead_lettered_child_still_completes_the_parent(pair, rds, monkeypatch):
    """A child that keeps hitting system errors is dead-lettered and counted as failed."""
    zips, seg = pair
    key = submit(rds, zips.settings, None, queue="seg-zip", name="flaky.zip",
                 data=zip_bytes([("ok.tif", tif_bytes(1)), ("flaky.tif", tif_bytes(2))]))
    assert zips.run_one() == "parked"
    real = seg.consumer.run_app  # the DeepCell application step (NUCLEAR_MODEL: no threshold fallback)

    def flaky(*args, **kwargs):
        if "flaky" in seg.consumer.job.key:
            raise ConnectionError("model server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(seg.consumer, "run_app", flaky)
    outcomes = seg.drain()
    assert outcomes.count("dead") == 1 and outcomes.count("done") == 1, outcomes
    assert rds.lrange("seg-zip", 0, -1) == [key]
    assert zips.run_one() == "done"
    job = rds.hgetall(key)
    assert job["children_done"] == "1" and job["children_failed"] == "1"
    failures = json.loads(open_result(zips.settings, job).read("failures.json"))
    assert failures["failed"][0]["name"] == "flaky.tif" and failures["failed"][0]["failure_type"] == "system"


def test_flat_layout_mirrors_the_archive_and_never_collides():
    layout = FlatLayout(("failures.json", "results.json", "log.txt"))
    # a child that already wrote the kiosk's `{dir}/` keeps its path; one that wrote flat names gets `{dir}/`
    assert layout.place("plate/A1/cells.tif", "plate/A1/cells_batch_0_feature_0.tif") == "plate/A1/cells_batch_0_feature_0.tif"
    assert layout.place("plate/A2/cells.tif", "cells_batch_0_feature_0.tif") == "plate/A2/cells_batch_0_feature_0.tif"
    # per-job files not named after the input get `{name}_`; names made safe by a consumer still count as named
    assert layout.place("plate/A2/cells.tif", "results.json") == "plate/A2/cells_results.json"
    assert layout.place("my cells (1).png", "my_cells_1_feature_0.tif") == "my_cells_1_feature_0.tif"
    # a name the parent's own files hold already moves under the input's file name
    assert layout.place("results.tif", "results.json") == "results.tif/results.json"
    # the same stem twice in one folder: the later child's files go under its input's file name
    assert layout.place("plate/A2/cells.png", "cells_batch_0_feature_0.tif") == "plate/A2/cells.png/cells_batch_0_feature_0.tif"
    assert layout.place("plate/A2/cells.png", "cells_batch_0_feature_0.tif") == "plate/A2/cells.png~2/cells_batch_0_feature_0.tif"
    assert layout.place("log.png", "log.txt") == "log.png/log.txt"
    assert layout.place("x.png", "../x.tif") != layout.place("x.png", "x.tif")
