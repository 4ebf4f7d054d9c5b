"""`caliban` / `tracking` jobs through the real gRPC wire into the dev model server.

Ground truth: synthetic movies of drifting nuclei with one division and one cell leaving the field
(tests/helpers/synthetic_cells.py): every true nucleus is one continuous output track, the
division's parent and daughters are right; lineage.json and the .trk read back into the same
arrays; a 60-frame movie finishes in a real worker process; bad inputs fail with one sentence.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import numpy as np
import pytest
import tifffile

from redis_consumer.consumers.caliban import CalibanConsumer
from redis_consumer.deepcell.tracking import trk
from redis_consumer.testing import LocalTF, ModelServer, run_job
from redis_consumer.utils.timestamps import now_iso
from tests.helpers.net import wait_until
from tests.helpers.redis_server import env_for
from tests.helpers.synthetic_cells import nuclei_movie
from tests.helpers.workers import start_worker, stop_all

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server():
    with ModelServer() as running:
        yield running


def tif(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def track_of_nuclei(movie, y_tracked: np.ndarray) -> dict[int, int]:
    """True nucleus -> its output track label; asserts each nucleus is one track on every frame
    it is visible in (read from the core of its true disk, so segmentation edges do not count)."""
    from scipy import ndimage

    owner: dict[int, set[int]] = {}
    for t, frame_truth in enumerate(movie.truth):
        for label, ident in frame_truth.items():
            core = ndimage.binary_erosion(movie.y[t] == label, iterations=2)
            core = core if core.any() else movie.y[t] == label
            values = y_tracked[t][core]
            values = values[values > 0]
            assert values.size, f"nucleus {ident} not segmented in frame {t}"
            owner.setdefault(ident, set()).add(int(np.bincount(values).argmax()))
    assert all(len(v) == 1 for v in owner.values()), owner
    return {ident: labels.pop() for ident, labels in owner.items()}


def check_tracks(movie, y_tracked, tracks, divided, leaver, leave_frame):
    tracks = {int(k): v for k, v in tracks.items()}
    track_of = track_of_nuclei(movie, y_tracked)
    assert sorted(track_of.values()) == sorted(tracks)  # one track per nucleus, none extra
    for ident, label in track_of.items():
        nucleus, track = movie.nuclei[ident], tracks[label]
        visible = [t for t in nucleus.frames if ident in movie.truth[t].values()]
        assert track["frames"] == visible == list(range(visible[0], visible[-1] + 1)), (ident, track)
        assert track["parent"] == (None if nucleus.parent is None else track_of[nucleus.parent])
        assert sorted(track["daughters"]) == sorted(track_of[c] for c in nucleus.children)
    parent = tracks[track_of[divided]]
    assert parent["capped"] is True and parent["frame_div"] == parent["frames"][-1] + 1
    assert len(parent["daughters"]) == 2
    assert tracks[track_of[leaver]]["frames"] == list(range(leave_frame + 1))
    return track_of


def test_movie_with_a_division_and_a_leaving_cell(server):
    movie = nuclei_movie(n_frames=12, divide=[(5, 6)], leave=7, leave_frame=4, seed=0, split=1.2)
    seen: list[int] = []

    class Recording(CalibanConsumer):  # what the job reported while running (done writes 100 anyway)
        def consume(self, job):
            report = job.progress
            job.progress = lambda p: (seen.append(int(p)), report(p))[1]
            return super().consume(job)

    run = run_job(Recording, {}, inputs={"movie.tif": tif(movie.X)}, model_server=server.address,
                  queue="caliban")
    assert run.status == "done", run.hash.get("reason")
    assert sorted(run.files) == ["lineage.json", "log.txt", "movie.trk", "movie_feature_0.tif",
                                 "movie_tracks.png", "results.json"]
    y_tracked = tifffile.imread(io.BytesIO(run.files["movie_feature_0.tif"]))
    assert y_tracked.dtype == np.float32 and y_tracked.shape == movie.X.shape
    lineage = json.loads(run.files["lineage.json"])
    assert all(isinstance(k, str) for k in lineage)  # JSON keys, as the kiosk's json.dump gives them
    check_tracks(movie, y_tracked.astype(np.int64), lineage, divided=5, leaver=7, leave_frame=4)
    # the .trk reads back into the same arrays and lineage
    data = trk.load_trk(run.files["movie.trk"])
    assert np.array_equal(data.raw[..., 0], movie.X) and data.raw.shape == movie.X.shape + (1,)
    assert np.array_equal(data.tracked[..., 0], y_tracked.astype(np.int32))
    assert data.lineages == [{int(k): v for k, v in lineage.items()}]
    summary = json.loads(run.files["results.json"])
    assert summary["track_count"] == len(lineage) == int(run.hash["track_count"]) == 18
    assert summary["division_count"] == 1 == int(run.hash["division_count"])
    assert summary["parameters"]["distance_threshold"] == 50 and summary["parameters"]["embedding_axis"] == 1
    assert summary["segmentation_model"] == "NuclearSegmentation:6"
    assert run.files["movie_tracks.png"].startswith(b"\x89PNG")
    # progress moved per frame while tracking (the kiosk leaves it at 0)
    assert seen == sorted(seen) and seen[0] == 0 and seen[-1] == 95 and len(seen) >= 1 + 1 + 11, seen


def test_trk_input_is_tracked_without_segmentation(server):
    movie = nuclei_movie(n_frames=10, divide=[(9, 5)], leave=3, leave_frame=6, seed=3)
    archive = trk.save_trk({}, movie.X[..., None], movie.y[..., None].astype(np.int32))
    run = run_job(CalibanConsumer, {}, inputs={"movie.trk": archive}, model_server=server.address)
    assert run.status == "done", run.hash.get("reason")
    y_tracked = tifffile.imread(io.BytesIO(run.files["movie_feature_0.tif"])).astype(np.int64)
    check_tracks(movie, y_tracked, json.loads(run.files["lineage.json"]), divided=9, leaver=3, leave_frame=6)
    summary = json.loads(run.files["results.json"])
    assert summary["segmentation_model"] is None and summary["applications"] == []


def test_sixty_frames_in_a_real_worker(server, redis_server, rds, tmp_path):
    """A 60-frame stack (the limit) through `consume_redis_events.py` with the dev models."""
    movie = nuclei_movie(n_frames=60, size=200, grid=5, divide=[(12, 45)], leave=4, leave_frame=30, seed=7,
                         split=1.2)
    bucket = tmp_path / "bucket"
    (bucket / "uploads").mkdir(parents=True)
    (bucket / "uploads" / "long.tif").write_bytes(tif(movie.X))
    key = f"caliban:long.tif:{uuid.uuid4().hex}"
    rds.hset(key, mapping={"status": "new", "input_file_name": "uploads/long.tif", "original_name": "long.tif",
                           "created_at": now_iso(), "channels": "0,,", "dimension_order": "XYB", "scale": "2"})
    rds.lpush("caliban", key)
    env = env_for(redis_server, QUEUE="caliban", CONSUMER_TYPE="caliban", STORAGE_BUCKET=f"file://{bucket}",
                  TF_HOST="127.0.0.1", TF_PORT=str(server.port), OUTPUT_URL_MODE="key", EMPTY_QUEUE_TIMEOUT="0.5",
                  HEARTBEAT_INTERVAL="0.5", HEARTBEAT_TTL="5", JOB_TIMEOUT="900")
    log = tmp_path / "worker.log"
    procs = [start_worker(env, str(log))]
    try:
        wait_until(lambda: rds.hget(key, "status") in ("done", "failed"), timeout=280, interval=0.5,
                   message="the 60-frame job to end")
    finally:
        stop_all(procs)
    job = rds.hgetall(key)
    assert job["status"] == "done", (job.get("reason"), log.read_text()[-3000:])
    with zipfile.ZipFile(bucket / job["output_file_name"]) as zf:
        y_tracked = tifffile.imread(io.BytesIO(zf.read("long_feature_0.tif"))).astype(np.int64)
        lineage = json.loads(zf.read("lineage.json"))
    assert y_tracked.shape == (60, 200, 200)
    # channels, dimension_order and scale were ignored (kiosk quirk Q18)
    check_tracks(movie, y_tracked, lineage, divided=12, leaver=4, leave_frame=30)
    assert len(lineage) == 25 + 2


@pytest.mark.parametrize("name, data, words", [
    ("flat.tif", tif(np.zeros((64, 64), np.uint16)), "3-D TIFF movie"),
    ("long.tif", tif(np.zeros((61, 16, 16), np.uint16)), "61 frames but caliban tracks at most 60"),
    ("movie.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "multi-page TIFF"),
    ("broken.trk", b"not a tar archive at all", "cannot be tracked"),
    ("multi.trks", trk.save_trks([{}, {}], np.zeros((2, 3, 16, 16, 1)), np.zeros((2, 3, 16, 16, 1), np.int32)),
     "holds 2 movies"),
])
def test_bad_movies_fail_with_one_sentence(name, data, words):
    run = run_job(CalibanConsumer, {}, inputs={name: data}, tf=LocalTF())
    reason = run.hash["reason"]
    assert run.status == "failed" and run.hash["failure_type"] == "user"
    assert words in reason and "\n" not in reason and reason.endswith("."), reason


def test_model_settings_are_honoured_and_checked():
    movie = nuclei_movie(n_frames=4, grid=2, size=96, seed=5)
    run = run_job(CalibanConsumer, {}, inputs={"m.tif": tif(movie.X)}, tf=LocalTF(),
                  settings={"TRACKING_SEGMENT_MODEL": "CytoplasmSegmentation:5"})
    assert run.status == "done", run.hash.get("reason")
    summary = json.loads(run.files["results.json"])
    assert summary["segmentation_model"] == "CytoplasmSegmentation:5"
    assert {a["model"] for a in summary["applications"]} == {"CytoplasmSegmentation:5"}
    run = run_job(CalibanConsumer, {}, inputs={"m.tif": tif(movie.X)}, tf=LocalTF(),
                  settings={"CALIBAN_MODEL": "NuclearSegmentation:6"})
    assert run.status == "failed" and "check CALIBAN_MODEL" in run.hash["reason"], run.hash.get("reason")
    run = run_job(CalibanConsumer, {}, inputs={"m.tif": tif(movie.X)}, tf=LocalTF(), settings={"APPEARANCE_DIM": "16"})
    assert run.status == "failed" and "set APPEARANCE_DIM=32" in run.hash["reason"], run.hash.get("reason")
