"""Segmentation consumer through the real Redis protocol, in-process, with the numpy models."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from redis_consumer.consumers.segmentation import SegmentationConsumer
from redis_consumer.consumers.threshold_segmentation import ThresholdSegmentation
from redis_consumer.errors import UserError
from tests.consumer_harness import (
    Harness,
    LocalTF,
    open_result,
    results_json,
    settings_for,
    submit,
)
from tests.test_consumers_postprocess import k_disks


@pytest.fixture
def seg(rds, tmp_path):
    settings = settings_for(tmp_path, MAX_IMAGE_HEIGHT=512, MAX_IMAGE_WIDTH=512, MAX_IMAGE_FRAMES=8)
    return Harness(rds, settings, SegmentationConsumer, tf=LocalTF())


def write_tif(tmp_path, name, data, **kw):
    path = tmp_path / name
    tifffile.imwrite(path, data, **kw)
    return str(path)


def test_single_tiff_k_disks_done_with_labels_overlay_results_and_log(seg, rds, tmp_path):
    k = 9
    path = write_tif(tmp_path, "cells.tif", k_disks(k, size=192, radius=8).astype(np.uint16))
    key = submit(rds, seg.settings, path, model_name="NuclearSegmentation", model_version="1")
    assert seg.run_one() == "done"
    job = rds.hgetall(key)
    assert job["status"] == "done", job
    assert job["output_file_name"] == job["output_url"]  # OUTPUT_URL_MODE=key
    for field in ("download_time", "predict_time", "postprocess_time", "upload_time", "total_time", "finished_at"):
        assert float(job[field]) >= 0 if field != "finished_at" else job[field]
    assert job["object_count"] == str(k)
    zf = open_result(seg.settings, job)
    names = set(zf.namelist())
    assert {"cells_labels.tif", "cells_overlay.png", "results.json", "log.txt"} <= names
    labels = tifffile.imread(io.BytesIO(zf.read("cells_labels.tif")))
    assert labels.shape == (192, 192) and labels.max() == k
    summary = results_json(zf)
    assert summary["object_count"] == k
    assert summary["model"] == {"name": "NuclearSegmentation", "version": "1"}
    assert summary["input_shape"] == [1, 192, 192, 1]
    assert {"load", "preprocess", "model", "postprocess", "save"} <= set(summary["timings"])
    assert "stage predict" in zf.read("log.txt").decode()
    overlay = np.asarray(Image.open(io.BytesIO(zf.read("cells_overlay.png"))).convert("RGB"))
    assert overlay.shape == (192, 192, 3)


def test_default_model_is_segmentation_model_setting(seg, rds, tmp_path):
    path = write_tif(tmp_path, "d.tif", k_disks(4, size=96, radius=6).astype(np.float32))
    key = submit(rds, seg.settings, path)
    assert seg.run_one() == "done"
    assert rds.hget(key, "object_count") == "4"


def test_multipage_tiff_counts_per_frame(seg, rds, tmp_path):
    stack = np.stack([k_disks(k, size=96, radius=6, seed=k) for k in (1, 4, 9)]).astype(np.uint16)
    key = submit(rds, seg.settings, write_tif(tmp_path, "stack.tif", stack, photometric="minisblack"))
    assert seg.run_one() == "done"
    summary = results_json(open_result(seg.settings, rds.hgetall(key)))
    assert summary["objects_per_batch"] == {"nuclear": [1, 4, 9]}  # a 3-D stack is BXY (kiosk layout)


def test_png_with_channels_field(seg, rds, tmp_path):
    rgb = np.zeros((96, 96, 3), np.uint8)
    rgb[..., 2] = (k_disks(4, size=96, radius=6) > 500) * 200 + 20
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    key = submit(rds, seg.settings, str(tmp_path / "rgb.png"), channels="2")
    assert seg.run_one() == "done"
    assert rds.hget(key, "object_count") == "4"


@pytest.mark.parametrize("setup,match", [
    ("wrong_channels", "asks for channel 5"),  # kiosk slots: channel 5 of an RGB image
    ("oversized", "MAX_IMAGE_HEIGHT"),
    ("corrupt", "corrupt or truncated"),
    ("not_image", "not a supported image"),
    ("unknown_model", "Nope:3"),
    ("missing_input", "missing.tif"),
    ("nan_pixels", "NaN pixel"),
    ("inf_pixels", "infinite (Inf) pixel"),
    ("too_small", "smaller than the 8x8 minimum (MIN_IMAGE_SIZE)"),
    ("five_d", "5 dimension(s) (2x3x2x16x16"),
])
def test_bad_jobs_fail_at_once_with_a_user_reason(seg, rds, tmp_path, setup, match):
    name, extra, data = "bad.tif", {}, None
    if setup == "wrong_channels":
        path, extra = write_tif(tmp_path, name, np.zeros((32, 32, 3), np.uint8), photometric="rgb"), {"channels": "5"}
    elif setup == "oversized":
        path = write_tif(tmp_path, name, np.zeros((600, 40), np.uint8))
    elif setup == "corrupt":
        path, data = None, b"II*\x00" + b"\x00" * 20
    elif setup == "not_image":
        path, data = None, b"%PDF-1.4 not an image"
    elif setup in ("nan_pixels", "inf_pixels"):
        pixels = np.ones((32, 32), np.float32)
        pixels[4:8, 4:8] = np.nan if setup == "nan_pixels" else np.inf
        path = write_tif(tmp_path, name, pixels)
    elif setup == "too_small":
        path = write_tif(tmp_path, name, np.zeros((1, 1), np.uint8))
    elif setup == "five_d":
        path = write_tif(tmp_path, name, np.zeros((2, 3, 2, 16, 16), np.uint8))
    elif setup == "unknown_model":
        path, extra = write_tif(tmp_path, name, np.zeros((32, 32), np.uint8)), {"model_name": "Nope", "model_version": "3"}
    else:
        path = write_tif(tmp_path, name, np.zeros((32, 32), np.uint8))
    key = submit(rds, seg.settings, path, name=name, data=data, **extra)
    if setup == "missing_input":
        rds.hset(key, "input_file_name", "uploads/missing.tif")
    assert seg.run_one() == "failed"
    job = rds.hgetall(key)
    assert job["status"] == "failed" and job["failure_type"] == "user", job
    assert match in job["reason"], job["reason"]
    assert "Traceback" not in job["reason"] and "\n" not in job["reason"]
    assert job["attempts"] == "1"


def test_kiosk_scale_field_rescales_for_the_model_and_labels_come_back_full_size(seg, rds, tmp_path):
    path = write_tif(tmp_path, "small.tif", k_disks(4, size=96, radius=5).astype(np.uint16))
    key = submit(rds, seg.settings, path, scale="2")
    assert seg.run_one() == "done"
    job = rds.hgetall(key)
    assert job["object_count"] == "4"
    zf = open_result(seg.settings, job)
    labels = tifffile.imread(io.BytesIO(zf.read("small_labels.tif")))
    assert labels.shape == (96, 96) and labels.max() == 4
    assert "rescaled by 2" in zf.read("log.txt").decode()
    bad = submit(rds, seg.settings, path, name="bad_scale.tif", scale="zero")
    assert seg.run_one() == "failed"
    assert "scale" in rds.hget(bad, "reason")


class HalfRowsSegmentation(ThresholdSegmentation):
    """A model that answers with half the rows it was sent (what a wrong model would do)."""

    def predict(self, batch, model, version):
        return super().predict(batch, model, version)[:, : batch.shape[1] // 2]


def test_model_output_of_the_wrong_shape_fails_naming_model_and_shapes(rds, tmp_path):
    h = Harness(rds, settings_for(tmp_path), HalfRowsSegmentation, tf=LocalTF())
    path = write_tif(tmp_path, "cells.tif", k_disks(4, size=64, radius=6).astype(np.uint16))
    key = submit(rds, h.settings, path, model_name="Identity", model_version="1")
    assert h.run_one() == "failed"
    job = rds.hgetall(key)
    assert job["failure_type"] == "user", job
    reason = job["reason"]
    assert "Identity:1" in reason and "1x32x64x1" in reason and "1x64x64xC" in reason, reason
    assert reason.endswith(".") and "\n" not in reason
    # with the job's scale the model input is 128x128: that (not the input's 64x64) is expected back
    key = submit(rds, h.settings, path, name="scaled.tif", model_name="Identity", model_version="1", scale="2")
    assert h.run_one() == "failed"
    assert "1x64x128x1" in rds.hget(key, "reason") and "1x128x128xC" in rds.hget(key, "reason")


def test_check_prediction_accepts_maps_of_the_sent_batch(rds, tmp_path):
    consumer = Harness(rds, settings_for(tmp_path), ThresholdSegmentation, tf=LocalTF()).consumer
    batch = np.zeros((2, 40, 30, 1), np.float32)
    consumer.check_prediction(np.zeros((2, 40, 30, 3)), batch, "M", "1")
    consumer.check_prediction(np.zeros((2, 40, 30)), batch, "M", "1")  # channel-less output
    consumer.check_prediction({"head": np.zeros((2, 40, 30, 1)), "other": np.zeros(5)}, batch, "M", "1")
    for bad in (np.zeros((1, 40, 30, 1)), np.zeros((2, 30, 40, 1)), np.zeros((2, 40, 30, 1, 1)), np.zeros(())):
        with pytest.raises(UserError, match="Model M:1 returned an output of shape"):
            consumer.check_prediction(bad, batch, "M", "1")
