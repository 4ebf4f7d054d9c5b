"""Kiosk `segmentation` and `mesmer` jobs through the real gRPC wire into the dev model server.

Ground truth: synthetic nuclei (known discs) and cells (a membrane ring around each nucleus);
the dev server's DeepCell-signature models compute heads from the image, our pipeline (tiling,
untiling, deep watershed) turns them into labels, and the labels are scored against the truth.
"""

from __future__ import annotations

import io
import json
import os
import threading
import uuid

import numpy as np
import pytest
import tifffile
from PIL import Image

from redis_consumer.consumers.deepcell_base import kiosk_name, kiosk_tiff_names
from redis_consumer.consumers.mesmer import MesmerConsumer
from redis_consumer.consumers.segmentation import SegmentationConsumer
from redis_consumer.testing import LocalTF, ModelServer, run_job
from tests.deepcell_synthetic import matched_ious
from tests.helpers.net import wait_until
from tests.helpers.workers import start_worker, stop_all

pytestmark = pytest.mark.timeout(240)

H, W = 150, 210  # not tile multiples, not square: a transpose or a crop shows


def nuclei(seed: int = 0, h: int = H, w: int = W, r: tuple[float, float] = (7.0, 10.0), step: int = 46):
    """(truth labels, uint16 image): well separated bright discs on a noisy background."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[:h, :w]
    n = 0
    for cy in range(22 + seed % 3 * 4, h - 18, step):
        for cx in range(22 + seed % 5 * 3, w - 18, step + 6):
            n += 1
            radius = rng.uniform(*r)
            cy2, cx2 = cy + rng.uniform(-3, 3), cx + rng.uniform(-3, 3)
            truth[(yy - cy2) ** 2 + (xx - cx2) ** 2 <= radius * radius] = n
    image = (truth > 0) * 900.0 + rng.normal(120, 12, (h, w))
    return truth, np.clip(image, 0, 65535).astype(np.uint16)


def cells(seed: int = 0, h: int = H, w: int = W):
    """(nuclear truth, cell truth, (H, W, 2) [nuclear, membrane] image): a membrane ring of
    radius 16 around each nucleus."""
    truth, nuc = nuclei(seed, h, w, r=(6.0, 8.0), step=50)
    yy, xx = np.mgrid[:h, :w]
    cell = np.zeros_like(truth)
    membrane = np.random.default_rng(seed + 1).normal(80, 8, (h, w))
    from scipy import ndimage as ndi

    for i, (cy, cx) in enumerate(ndi.center_of_mass(truth > 0, truth, range(1, truth.max() + 1)), 1):
        d = np.hypot(yy - cy, xx - cx)
        cell[(d <= 16) & (cell == 0)] = i
        membrane[(d > 14) & (d <= 17)] += 700
    image = np.stack([nuc.astype(np.float64), membrane], -1)
    return truth, cell, np.clip(image, 0, 65535).astype(np.uint16)


def tiff_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def read_tif(run, name: str) -> np.ndarray:
    assert name in run.files, sorted(run.files)
    return tifffile.imread(io.BytesIO(run.files[name]))


def assert_found(truth: np.ndarray, labels: np.ndarray, min_iou: float = 0.75) -> None:
    assert labels.shape == truth.shape
    ious = matched_ious(truth, labels.astype(np.int64))
    assert len(np.unique(labels[labels > 0])) == truth.max()
    assert ious.mean() >= min_iou, ious


@pytest.fixture(scope="module")
def server():
    with ModelServer() as s:
        yield s.address


def seg(server, fields, data, name="cells.tif"):
    return run_job(SegmentationConsumer, {"original_name": name, **fields}, inputs={name: data},
                   model_server=server, queue="segmentation")


# -- every kiosk dimension order, through the wire -------------------------------------------------
def _layout(order: str):
    """An input in `order` with 2 batches and/or 2 channels; nuclei in channel 1 when C exists
    (channel 0 is noise). Returns (array, per-batch truths, channels field)."""
    t0, a0 = nuclei(0)
    t1, a1 = nuclei(1)
    noise = np.random.default_rng(9).normal(100, 5, (H, W)).astype(np.uint16)
    frames = [a0, a1] if "B" in order else [a0]
    truths = [t0, t1] if "B" in order else [t0]
    if "C" in order:
        stack = np.stack([np.stack([noise, f], -1) for f in frames])  # (B, X, Y, C)
    else:
        stack = np.stack(frames)[..., None]
    axes = "BXYC"
    arr = stack
    if "B" not in order:
        arr = arr[0]
        axes = axes.replace("B", "")
    if "C" not in order:
        arr = arr[..., 0]
        axes = axes.replace("C", "")
    arr = np.transpose(arr, [axes.index(a) for a in order])
    return np.ascontiguousarray(arr), truths, ("1," if "C" in order else "0,")


@pytest.mark.parametrize("order", ["XY", "XYC"])
def test_a_uint16_image_gives_the_files_of_its_float32_cast(server, order):
    """uint16 pixels reach the NuclearSegmentation preprocessing uncast (AppSpec.takes_uint16):
    every result file is the one the same image stored as float32 gives."""
    array, _truths, channels = _layout(order)
    runs = [seg(server, {"dimension_order": order, "channels": channels, "scale": "1"}, tiff_bytes(a))
            for a in (array, array.astype(np.float32))]
    assert [r.status for r in runs] == ["done", "done"]
    members = sorted(n for n in runs[0].files if n.endswith((".tif", ".png")))
    assert members == sorted(n for n in runs[1].files if n.endswith((".tif", ".png"))) and len(members) == 3
    for name in members:
        assert runs[0].files[name] == runs[1].files[name], name


@pytest.mark.parametrize("order", ["XY", "BXY", "CXY", "XYB", "XYC", "BXYC", "CXYB"])
def test_every_kiosk_dimension_order_gives_labels_of_the_input_size_frames_in_order(server, order):
    array, truths, channels = _layout(order)
    run = seg(server, {"dimension_order": order, "channels": channels, "scale": "1"}, tiff_bytes(array))
    assert run.status == "done", run.hash.get("reason")
    for i, truth in enumerate(truths):
        labels = read_tif(run, f"cells_batch_{i}_feature_0.tif")
        assert labels.dtype == np.float32 and labels.shape == (H, W)
        assert_found(truth, labels)
    assert f"cells_batch_{len(truths)}_feature_0.tif" not in run.files
    restored = read_tif(run, "cells_labels.tif")  # the input's own layout, one channel
    expect = tuple(1 if a == "C" else s for a, s in zip(order, array.shape))
    assert restored.shape == expect
    for i, truth in enumerate(truths):  # same labels as the kiosk-named files, frame i in place
        index = tuple(i if a == "B" else 0 if a == "C" else slice(None) for a in order)
        np.testing.assert_array_equal(restored[index], read_tif(run, f"cells_batch_{i}_feature_0.tif"))
    summary = json.loads(run.files["results.json"])
    assert summary["object_count"] == {"nuclear": sum(int(t.max()) for t in truths)}
    assert summary["dimension_order"] == order


# -- channel slots --------------------------------------------------------------------------------
def test_channel_slots_pick_models_and_stack_one_label_image_per_filled_slot(server):
    truth, image = nuclei(2)
    two = np.stack([image, image], -1)  # XYC
    cases = {"0,": ["nuclear"], ",0": ["cytoplasm"], "0,1": ["nuclear", "cytoplasm"], "0,,0": ["nuclear", "phase"],
             "": ["nuclear"]}
    for channels, slots in cases.items():
        run = seg(server, {"dimension_order": "XYC", "channels": channels}, tiff_bytes(two))
        assert run.status == "done", (channels, run.hash.get("reason"))
        summary = json.loads(run.files["results.json"])
        assert list(summary["object_count"]) == slots
        assert [a["model"] for a in summary["applications"]] == [
            {"nuclear": "NuclearSegmentation:6", "cytoplasm": "CytoplasmSegmentation:5",
             "phase": "PhaseCytoSegmentation:0"}[s] for s in slots]
        for c, slot in enumerate(slots):
            labels = read_tif(run, f"cells_batch_0_feature_{c}.tif")
            assert labels.shape == (H, W) and labels.dtype == np.float32
            if slot != "phase":  # the phase dev model finds halos, not fluorescent blobs
                assert_found(truth, labels)
        assert f"cells_batch_0_feature_{len(slots)}.tif" not in run.files
        assert {f"cells_{s}_overlay.png" for s in slots} <= set(run.files)


@pytest.mark.parametrize("channels, says", [("2,", "channel 2"), ("0,0,0,0", "at most 3"), (",,", "fills no"),
                                            ("a,", "channel numbers")])
def test_bad_channel_slots_fail_with_one_sentence(channels, says):
    _truth, image = nuclei(0)
    run = run_job(SegmentationConsumer, {"dimension_order": "XY", "channels": channels},
                  inputs={"cells.tif": tiff_bytes(image)}, tf=LocalTF())
    assert run.status == "failed" and says in run.hash["reason"], run.hash
    assert "\n" not in run.hash["reason"]


def test_web_form_defaults_on_a_grayscale_png(server):
    truth, image = nuclei(3)
    buf = io.BytesIO()
    Image.fromarray((image // 8).astype(np.uint8)).save(buf, format="PNG")
    run = seg(server, {"dimension_order": "XYB", "channels": "0,", "scale": "1", "label": "",
                       "model_name": "", "model_version": ""}, buf.getvalue(), name="cells.png")
    assert run.status == "done", run.hash.get("reason")
    assert_found(truth, read_tif(run, "cells_batch_0_feature_0.tif"))
    assert read_tif(run, "cells_labels.tif").shape == (H, W, 1)  # XYB of an (H, W, 1) PNG: B = 1 last


@pytest.mark.parametrize("scale", ["0.5", "2"])
def test_scale_round_trip_keeps_geometry(server, scale):
    truth, image = nuclei(4, r=(9.0, 12.0))
    run = seg(server, {"dimension_order": "XY", "channels": "0,", "scale": scale}, tiff_bytes(image))
    assert run.status == "done", run.hash.get("reason")
    assert_found(truth, read_tif(run, "cells_batch_0_feature_0.tif"), min_iou=0.6)
    app = json.loads(run.files["results.json"])["applications"][0]
    assert app["scale"] == float(scale) and app["image_mpp"] == pytest.approx(float(scale) * 0.65)


def test_kiosk_hash_fields_and_model_name_override(server):
    _truth, image = nuclei(0)
    run = seg(server, {"dimension_order": "XY", "channels": "0,", "model_name": "CytoplasmSegmentation",
                       "model_version": "5"}, tiff_bytes(image))
    assert run.status == "done", run.hash.get("reason")
    h = run.hash
    assert float(h["prediction_time"]) == float(h["predict_time"]) > 0
    assert h["predict_retries"] == "0" and h["total_jobs"] == "1" and h["nuclear_count"] == h["object_count"]
    assert json.loads(run.files["results.json"])["applications"][0]["model"] == "CytoplasmSegmentation:5"


def test_threshold_fallback_only_for_the_single_head_demo_model(server):
    truth, image = nuclei(0)
    run = seg(server, {"model_name": "NuclearSegmentation", "model_version": "1"}, tiff_bytes(image))
    assert run.status == "done", run.hash.get("reason")
    assert "cells_labels.tif" in run.files and not any("_feature_" in n for n in run.files)
    assert int(run.hash["object_count"]) == truth.max()


def test_a_model_without_fixed_tiles_or_missing_is_a_user_error():
    _truth, image = nuclei(0)
    run = run_job(SegmentationConsumer, {"channels": "0,"}, inputs={"cells.tif": tiff_bytes(image)}, tf=LocalTF(),
                  settings={"NUCLEAR_MODEL": "Absent:3"})
    assert run.status == "failed" and "Absent" in run.hash["reason"]


# -- mesmer ---------------------------------------------------------------------------------------
def mesmer(server, fields, data, name="tissue.tif"):
    return run_job(MesmerConsumer, {"original_name": name, **fields}, inputs={name: data},
                   model_server=server, queue="mesmer")


def test_mesmer_three_compartments_whole_cell_first(server):
    nuc_truth, cell_truth, image = cells(0)
    both = mesmer(server, {"channels": "0,1", "compartment": "both"}, tiff_bytes(image))
    assert both.status == "done", both.hash.get("reason")
    assert both.hash["dim_order"] == "YXC"
    whole, nuclear = read_tif(both, "tissue_feature_0.tif"), read_tif(both, "tissue_feature_1.tif")
    assert whole.dtype == np.float32 and whole.shape == (1, H, W) and nuclear.shape == (1, H, W)
    assert "tissue_feature_2.tif" not in both.files
    assert_found(nuc_truth, nuclear[0], min_iou=0.6)
    assert_found(cell_truth, whole[0], min_iou=0.6)
    assert (whole[0] > 0).sum() > 2 * (nuclear[0] > 0).sum()
    assert {"tissue_whole-cell_overlay.png", "tissue_nuclear_overlay.png"} <= set(both.files)
    for compartment, k in (("whole-cell", 0), ("nuclear", 1)):
        one = mesmer(server, {"channels": "0,1", "compartment": compartment}, tiff_bytes(image))
        assert one.status == "done", one.hash.get("reason")
        assert "tissue_feature_1.tif" not in one.files
        np.testing.assert_array_equal(read_tif(one, "tissue_feature_0.tif"), read_tif(both, f"tissue_feature_{k}.tif"))
    default = mesmer(server, {"channels": ""}, tiff_bytes(image))  # '' = 0,1; MESMER_COMPARTMENT whole-cell
    np.testing.assert_array_equal(read_tif(default, "tissue_feature_0.tif"), whole)


@pytest.mark.parametrize("channels", ["0,1", "1,0"])
def test_a_uint16_mesmer_image_gives_the_files_of_its_float32_cast(server, channels):
    """Mesmer's preprocessing reads uint16 pixels uncast (AppSpec.takes_uint16): every result
    file is the one the same image stored as float32 gives (swapped channels: a gathered pair)."""
    _nuc, _cell, image = cells(2)
    runs = [mesmer(server, {"channels": channels, "compartment": "both"}, tiff_bytes(a))
            for a in (image, image.astype(np.float32))]
    assert [r.status for r in runs] == ["done", "done"], [r.hash.get("reason") for r in runs]
    members = sorted(n for n in runs[0].files if n.endswith((".tif", ".png")))
    assert members == sorted(n for n in runs[1].files if n.endswith((".tif", ".png"))) and len(members) == 4
    for name in members:
        assert runs[0].files[name] == runs[1].files[name], name


def test_mesmer_channels_first_swapped_channels_and_bad_fields(server):
    nuc_truth, _cell, image = cells(1)
    first = mesmer(server, {"channels": "1,0", "compartment": "nuclear"},
                   tiff_bytes(np.ascontiguousarray(image[..., ::-1].transpose(2, 0, 1))))
    assert first.status == "done", first.hash.get("reason")
    assert first.hash["dim_order"] == "CYX"  # as the kiosk detects it before moving the axis
    assert_found(nuc_truth, read_tif(first, "tissue_feature_0.tif")[0], min_iou=0.6)
    for fields, says in (({"channels": "0,"}, "membrane channel empty"), ({"channels": "0,5"}, "channel 5"),
                         ({"compartment": "cytoplasm"}, "compartment")):
        run = run_job(MesmerConsumer, fields, inputs={"t.tif": tiff_bytes(image)}, tf=LocalTF())
        assert run.status == "failed" and says in run.hash["reason"], run.hash
    single = run_job(MesmerConsumer, {}, inputs={"t.tif": tiff_bytes(image[..., 0])}, tf=LocalTF())
    assert single.status == "failed" and "one channel" in single.hash["reason"]


# -- names ----------------------------------------------------------------------------------------
def test_kiosk_names():
    assert kiosk_name({"original_name": "plate/a/cells.ome.tif"}) == ("plate/a", "cells.ome")
    assert kiosk_name({"input_file_name": "uploads/x.png"}) == ("", "x")
    assert kiosk_name({"original_name": "../../etc/x.tif"}) == ("etc", "x")
    assert kiosk_tiff_names("n", "segmentation", 2, 2) == [
        "n_batch_0_feature_0.tif", "n_batch_0_feature_1.tif", "n_batch_1_feature_0.tif", "n_batch_1_feature_1.tif"]
    assert kiosk_tiff_names("n", "mesmer", 1, 2) == ["n_feature_0.tif", "n_feature_1.tif"]


# -- real worker processes ------------------------------------------------------------------------
def _env(redis_server, server, bucket, consumer, queue):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "QUEUE", "CONSUMER_TYPE", "STORAGE_"))}
    host, port = server.split(":")
    env.update({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "QUEUE": queue,
                "CONSUMER_TYPE": consumer, "TF_HOST": host, "TF_PORT": port, "STORAGE_BUCKET": f"file://{bucket}",
                "METRICS_PORT": "0", "ALLOW_ROOT": "true", "EMPTY_QUEUE_TIMEOUT": "0.5", "OUTPUT_URL_MODE": "public"})
    return env


def _frontend(rds, bucket, queue, name, data, **form):
    (bucket / "uploads").mkdir(parents=True, exist_ok=True)
    (bucket / "uploads" / name).write_bytes(data)
    key = f"{queue}:{name}:{uuid.uuid4().hex}"
    fields = {"input_file_name": f"uploads/{name}", "original_name": name, "model_name": "", "model_version": "",
              "status": "new", "created_at": "2026-01-01T00:00:00.000Z", "url": "", "label": "", "scale": "1",
              "dimension_order": "", "channels": "", **form}
    rds.hset(key, mapping=fields)
    rds.lpush(queue, key)
    return key


def test_real_workers_image_and_multiplex_jobs_done_with_output_url_in_the_done_write(rds, redis_server, server,
                                                                                     tmp_path):
    bucket = tmp_path / "bucket"
    procs = [start_worker(_env(redis_server, server, bucket, "image", "segmentation"), str(tmp_path / "s.log")),
             start_worker(_env(redis_server, server, bucket, "multiplex", "mesmer"), str(tmp_path / "m.log"))]
    seen: list[list[str]] = []
    monitor_client = redis_server.client()
    sentinel = "monitor-end-of-test"  # the watcher reads up to this command: all before it are in `seen`

    def watch():
        with monitor_client.monitor() as m:
            for cmd in m.listen():
                seen.append(cmd["command"])
                if sentinel in cmd["command"]:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        truth, gray = nuclei(5)
        png = io.BytesIO()
        Image.fromarray((gray // 8).astype(np.uint8)).save(png, format="PNG")
        seg_key = _frontend(rds, bucket, "segmentation", "cells.png", png.getvalue(), dimension_order="XYB",
                            channels="0,")
        _n, _c, two = cells(2)
        mes_key = _frontend(rds, bucket, "mesmer", "tissue.tif", tiff_bytes(two), channels="0,1")
        for key in (seg_key, mes_key):
            wait_until(lambda k=key: rds.hget(k, "status") in ("done", "failed"), timeout=120, message=key)
        rds.echo(sentinel)
        watcher.join(timeout=30)
        assert not watcher.is_alive(), "MONITOR never showed the end-of-test command"
        for key in (seg_key, mes_key):
            job = rds.hgetall(key)
            assert job["status"] == "done", job
            assert "?" not in job["output_url"] and job["output_url"].endswith(".zip")
            assert float(job["prediction_time"]) > 0 and job["predict_retries"] == "0"
        assert rds.hget(mes_key, "dim_order") == "YXC"
        for key in (seg_key, mes_key):  # the write that says done also carries output_url
            done_writes = [c for c in seen if c.startswith(f"HSET {key} ") and " status done " in c]
            assert done_writes and all(" output_url " in c for c in done_writes), done_writes
        import zipfile

        with zipfile.ZipFile(rds.hget(seg_key, "output_url")[len("file://"):]) as zf:
            labels = tifffile.imread(io.BytesIO(zf.read("cells_batch_0_feature_0.tif")))
        assert_found(truth, labels)
    finally:
        stop_all(procs)


# -- retries, settings, small images, zip-child names -----------------------------------------------
def test_predict_retries_count_every_failed_predict_attempt():
    truth, image = nuclei(6, h=600, w=520)
    with ModelServer(fail_rate=0.3, seed=3, max_batch_size=2) as flaky:
        run = run_job(SegmentationConsumer, {"dimension_order": "XY", "channels": "0,"},
                      inputs={"cells.tif": tiff_bytes(image)}, model_server=flaky.address,
                      settings={"GRPC_BACKOFF": 0.01, "MAX_RETRY": 8})
        injected = flaky.stats()["injected_failures"]
    assert run.status == "done", run.hash.get("reason")
    assert injected > 0 and int(run.hash["predict_retries"]) == injected
    assert json.loads(run.files["results.json"])["predict_retries"] == injected
    assert_found(truth, read_tif(run, "cells_batch_0_feature_0.tif"))


def test_tiles_cut_into_one_request_label_as_tiles_framed_batch_by_batch():
    """All tiles in one request are cut straight into its bytes; the labels are those of tiles
    framed per batch of 4, also when that one request is sent again after injected failures."""
    truth, image = nuclei(7, h=600, w=520)  # 3 x 3 tiles of 256
    inputs, fields = {"cells.tif": tiff_bytes(image)}, {"dimension_order": "XY", "channels": "0,"}
    with ModelServer(fail_rate=0.7, seed=5) as flaky:
        runs = [run_job(SegmentationConsumer, fields, inputs=inputs, model_server=flaky.address,
                        settings={"GRPC_BACKOFF": 0.01, "MAX_RETRY": 8, "TF_MAX_BATCH_SIZE": size})
                for size in (32, 4)]
    assert [r.status for r in runs] == ["done", "done"], [r.hash.get("reason") for r in runs]
    assert int(runs[0].hash["predict_retries"]) > 0
    one, batched = (read_tif(r, "cells_batch_0_feature_0.tif") for r in runs)
    np.testing.assert_array_equal(one, batched)
    assert_found(truth, one)


def test_postprocess_settings_override_the_applications_parameters(server):
    _n, _c, image = cells(3)
    run = run_job(MesmerConsumer, {"compartment": "both"}, inputs={"t.tif": tiff_bytes(image)}, model_server=server,
                  settings={"MESMER_POSTPROCESS": '{"nuclear": {"small_objects_threshold": 100000}}'})
    assert run.status == "done", run.hash.get("reason")
    assert run.hash["nuclear_count"] == "0" and int(run.hash["whole_cell_count"]) > 0
    params = json.loads(run.files["results.json"])["applications"][0]["postprocess"]
    assert params["nuclear"]["small_objects_threshold"] == 100000 and params["whole-cell"]["small_objects_threshold"] == 15
    from redis_consumer.errors import ConfigError
    from redis_consumer.settings import Settings

    with pytest.raises(ConfigError, match="SEGMENTATION_POSTPROCESS.*unknown postprocess parameter 'radiuss'"):
        SegmentationConsumer(Settings.from_env({}, SEGMENTATION_POSTPROCESS='{"radiuss": 3}', METRICS_PORT=0))


@pytest.mark.parametrize("h, w", [(100, 300), (300, 100), (90, 120)])
def test_images_shorter_than_a_tile_on_one_or_both_axes(server, h, w):
    truth, image = nuclei(7, h=h, w=w)
    run = seg(server, {"dimension_order": "XY", "channels": "0,"}, tiff_bytes(image))
    assert run.status == "done", run.hash.get("reason")
    assert_found(truth, read_tif(run, "cells_batch_0_feature_0.tif"))


def test_zip_child_results_sit_in_the_archive_folder_with_kiosk_names(server):
    truth, image = nuclei(8)
    run = seg(server, {"dimension_order": "XY", "channels": "0,"}, tiff_bytes(image), name="plate/well A/cells.tif")
    assert run.status == "done", run.hash.get("reason")
    assert {"plate/well A/cells_batch_0_feature_0.tif", "plate/well A/cells_labels.tif", "results.json",
            "log.txt"} <= set(run.files)
    assert_found(truth, read_tif(run, "plate/well A/cells_batch_0_feature_0.tif"))


def test_a_scale_that_would_blow_the_image_up_past_the_limit_is_refused():
    _truth, image = nuclei(0)
    run = run_job(SegmentationConsumer, {"dimension_order": "XY", "scale": "10"}, inputs={"cells.tif": tiff_bytes(image)},
                  tf=LocalTF(), settings={"MAX_IMAGE_HEIGHT": 256, "MAX_IMAGE_WIDTH": 256})
    assert run.status == "failed" and "use a smaller scale" in run.hash["reason"], run.hash
