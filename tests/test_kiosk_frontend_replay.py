"""The kiosk's own clients, replayed byte for byte, against real workers: every job comes back as they read it.

`tests/helpers/kiosk_frontend.py` performs what kiosk-frontend 0.11.3's controllers write for each
job form (the HMSET of its 17 fields and the LPUSH, FE server/controllers/predict.controller.js:82-147),
after the frontend's own upload path: GCS objects under `uploads/{md5}{ext}` with the key as
`uploadedName`, S3 objects whose `uploadedName` is the full virtual-hosted https URL
(FE server/controllers/upload.controller.js:13-71). kiosk-client's jobs carry no job form and its
relpath'ed names (KC kiosk_client/job.py:255-282, 394-402).

Real redis-server, real worker processes (`consume_redis_events.py`, a segmentation and a zip
worker), the dev model server over gRPC, and the GCS emulator or moto, in OUTPUT_URL_MODE=public
and signed. Read back: what the page polls (FE src/Predict/Predict.js:57-116), kiosk-client's
summary (KC job.py:299-331, its dateutil subtraction at 422-436), the page's expire reply, and the
result itself (label images of the input's height and width with the objects where they were).
"""

from __future__ import annotations

import io
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tifffile
from dateutil import parser as dateparser
from PIL import Image

from redis_consumer.testing import ModelServer
from tests.helpers import kiosk_venv
from tests.helpers.kiosk_frontend import KioskFrontend, Upload
from tests.helpers.redis_server import env_for
from tests.helpers.workers import start_worker, stop_all
from tests.test_consumers_postprocess import disks
from tests.test_kiosk_client import fake_service_account
from tests.test_segmesmer import assert_found, cells, tiff_bytes

pytestmark = pytest.mark.timeout(900)
SANE_ZIP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}\.zip$")
#: kiosk-client's summary numbers (KC job.py:299-331); the last two apply to zip parents only.
CLIENT_NUMBERS = ("prediction_time", "predict_retries", "postprocess_time", "upload_time", "download_time",
                  "total_jobs", "total_time")
ZIP_NUMBERS = ("children_upload_time", "cleanup_time")


# ---- synthetic inputs with a known truth ------------------------------------------------------

@dataclass
class Picture:
    """An image of bright disks at known places (row, col), and its encoded file."""

    shape: tuple[int, int]
    centres: list[tuple[int, int]]
    radius: int
    data: bytes = b""

    def truth(self) -> np.ndarray:
        rows, cols = np.ogrid[:self.shape[0], :self.shape[1]]
        out = np.zeros(self.shape, np.int32)
        for i, (r, c) in enumerate(self.centres, 1):
            out[(rows - r) ** 2 + (cols - c) ** 2 <= self.radius ** 2] = i
        return out


def picture(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int, kind: str, seed: int = 0) -> Picture:
    rng = np.random.default_rng(seed)
    image = disks(shape, centres, radius) + rng.normal(20, 3, shape)
    buf = io.BytesIO()
    if kind == "png":  # grayscale PNG: the kiosk loads it as (H, W, 1), so the page's XYB fits
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(buf, "PNG")
    else:  # a 2-D TIFF, stored as (H, W)
        tifffile.imwrite(buf, np.clip(image * 100, 0, 65535).astype(np.uint16))
    return Picture(shape, centres, radius, buf.getvalue())


def zip_of(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


PNG = picture((96, 128), [(30, 35), (62, 96)], 11, "png", seed=1)
WIDE_TIF = picture((160, 256), [(40, 60), (118, 200), (120, 40)], 13, "tif", seed=2)
ZIP_MEMBERS = {
    "plate/A1/one.png": picture((64, 96), [(30, 30)], 10, "png", seed=3),
    "plate/A2/two.png": picture((80, 64), [(20, 20), (58, 44)], 9, "png", seed=4),
    "three.png": picture((72, 72), [(36, 36)], 12, "png", seed=5),
}
GOOD = picture((64, 80), [(32, 24)], 10, "png", seed=6)
BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature, then junk
CLIENT_TIF = picture((128, 96), [(30, 30), (96, 64)], 10, "tif", seed=7)
NUCLEI_TRUTH, CELL_TRUTH, TISSUE = cells(3)  # (150, 210, 2): nuclear, membrane


# ---- one kiosk deployment per (store, URL mode) ------------------------------------------------

@dataclass
class Deployment:
    store: str
    mode: str
    redis: Any
    frontend: KioskFrontend
    jobs: dict[str, str] = field(default_factory=dict)  # name -> job key
    seen: dict[str, dict] = field(default_factory=dict)  # name -> the page's first final poll
    hashes: dict[str, dict] = field(default_factory=dict)
    uploads: dict[str, Upload] = field(default_factory=dict)


@pytest.fixture(scope="module")
def model_server():
    server = ModelServer().start()
    yield server
    server.stop()


def _store(request, store: str, mode: str, tmp_path) -> tuple[dict[str, str], Any]:
    """(worker env for the bucket, an upload function doing what the frontend's controller does)."""
    if store == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        server = request.getfixturevalue("gcs_server")
        env = {**server.env(), "STORAGE_BUCKET": "gs://test-bucket"}
        if mode == "signed":  # a made-up service-account key, so the worker signs URLs as in production
            env["GOOGLE_APPLICATION_CREDENTIALS"] = fake_service_account(tmp_path)
        bucket = gcs.Client(project="kiosk", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": server.host}).bucket("test-bucket")
        return env, lambda name, data: KioskFrontend.upload_gcs(bucket, name, data)
    import boto3

    server = request.getfixturevalue("s3_server")
    env = {**server.env(), "STORAGE_BUCKET": "s3://test-bucket"}
    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    return env, lambda name, data: KioskFrontend.upload_s3(s3, "test-bucket", name, data)


@pytest.fixture(scope="module", params=["gcs-public", "gcs-signed", "s3-public", "s3-signed"])
def deployment(request, redis_server, model_server, tmp_path_factory):
    """Workers for one deployment; every job form submitted the frontend's way and waited for."""
    store, mode = request.param.split("-")
    tmp_path = tmp_path_factory.mktemp(request.param)
    env, upload = _store(request, store, mode, tmp_path)
    client = redis_server.client()
    client.flushall()
    common = {"QUEUE": "segmentation", "TF_HOST": "127.0.0.1", "TF_PORT": str(model_server.port),
              "OUTPUT_URL_MODE": mode, "EMPTY_QUEUE_TIMEOUT": "0.5", "HEARTBEAT_INTERVAL": "0.5",
              "HEARTBEAT_TTL": "10", **env}
    procs = [start_worker(env_for(redis_server, **{**common, "CONSUMER_TYPE": kind, "QUEUE": queue}),
                          str(tmp_path / f"{kind}.log"))
             for kind, queue in (("segmentation", "segmentation"), ("zip", "segmentation"), ("mesmer", "mesmer"))]
    frontend = KioskFrontend(client)
    dep = Deployment(store, mode, client, frontend)
    try:
        files = {"png": ("cells.png", PNG.data), "tif": ("wide.tif", WIDE_TIF.data),
                 "zip": ("plate.zip", zip_of([(n, p.data) for n, p in ZIP_MEMBERS.items()])),
                 "zip_broken": ("mixed.zip", zip_of([("good.png", GOOD.data), ("bad/broken.png", BROKEN_PNG)])),
                 "zip_all_bad": ("bad.zip", zip_of([("x.png", BROKEN_PNG), ("y.png", BROKEN_PNG)])),
                 "client": ("client.tif", CLIENT_TIF.data), "mesmer": ("tissue.tif", tiff_bytes(TISSUE))}
        for name, (original, data) in files.items():
            dep.uploads[name] = upload(original, data)
        xy_form = {"dimensionOrder": "XY", "selectedChannels": "0,", "scale": 1}
        dep.jobs["png"] = frontend.predict_default_form("segmentation", "cells.png", dep.uploads["png"])
        dep.jobs["tif"] = frontend.predict("segmentation", "wide.tif", dep.uploads["tif"], xy_form)
        dep.jobs["zip"] = frontend.predict_default_form("segmentation", "plate.zip", dep.uploads["zip"])
        dep.jobs["zip_broken"] = frontend.predict_default_form("segmentation", "mixed.zip", dep.uploads["zip_broken"])
        dep.jobs["zip_all_bad"] = frontend.predict_default_form("segmentation", "bad.zip", dep.uploads["zip_all_bad"])
        dep.jobs["mesmer"] = frontend.predict_default_form("mesmer", "tissue.tif", dep.uploads["mesmer"])
        dep.jobs["client"] = frontend.predict_as_kiosk_client_upload("segmentation", dep.uploads["client"],
                                                                     model="NuclearSegmentation:6")
        for name, key in dep.jobs.items():
            dep.seen[name] = frontend.wait_final(key, timeout=240)
            dep.hashes[name] = client.hgetall(key)
        yield dep
    finally:
        stop_all(procs)
        client.close()


# ---- reading back like the page, kiosk-client and a user --------------------------------------

def fetch(url: str) -> tuple[int, bytes]:
    """A plain GET without credentials (a browser's Download link, kiosk-client's treq.get)."""
    try:
        with urllib.request.urlopen(url, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def result_zip(dep: Deployment, name: str) -> zipfile.ZipFile:
    status, body = fetch(dep.seen[name]["output_url"])
    assert status == 200, (dep.mode, dep.seen[name]["output_url"][:80], status)
    return zipfile.ZipFile(io.BytesIO(body))


def label_images(zf: zipfile.ZipFile, prefix: str = "") -> dict[str, np.ndarray]:
    """Every TIFF of the result under `prefix` (label images: kiosk-named or ours), squeezed to 2-D."""
    out = {}
    for name in zf.namelist():
        if name.startswith(prefix) and name.lower().endswith((".tif", ".tiff")):
            out[name] = np.squeeze(tifffile.imread(io.BytesIO(zf.read(name))))
    return out


def assert_objects_in_place(labels: np.ndarray, pic: Picture, what: str) -> None:
    """The label image has the input's height and width, and each true disk is one object where it was."""
    assert labels.shape == pic.shape, f"{what}: labels {labels.shape}, input {pic.shape}"
    truth = pic.truth()
    found = set()
    for i, (r, c) in enumerate(pic.centres, 1):
        value = int(labels[r, c])
        assert value > 0, f"{what}: no object at the disk centred {(r, c)}"
        mine, true = labels == value, truth == i
        iou = (mine & true).sum() / (mine | true).sum()
        assert iou > 0.5, f"{what}: the object at {(r, c)} overlaps its disk only {iou:.2f}"
        found.add(value)
    assert len(found) == len(pic.centres), f"{what}: disks merged into one object"


def assert_kiosk_named(zf: zipfile.ZipFile, prefix: str) -> None:
    """The kiosk's segmentation result file: `{dir}/{name}_batch_{i}_feature_{c}.tif`, float32 (kiosk-protocol.md §3.8)."""
    name = f"{prefix}_batch_0_feature_0.tif"
    assert name in zf.namelist(), zf.namelist()
    assert tifffile.imread(io.BytesIO(zf.read(name))).dtype == np.float32


def assert_page_done(dep: Deployment, name: str, *, failures: bool = False) -> dict:
    seen = dep.seen[name]
    assert seen["status"] == "done", (name, seen, dep.hashes[name].get("reason"))
    assert seen["output_url"], "output_url must come in the same write as status=done"  # the first poll that saw done
    assert int(seen["progress"]) == 100  # the page's parseInt drives the bar
    assert seen["reason"] in (None, "")
    assert bool(seen["failures"]) is failures, seen["failures"]
    assert seen["dim_order"] in (None, "") or re.fullmatch(r"[BXYC]+", seen["dim_order"])
    last = urllib.parse.urlsplit(seen["output_url"]).path.split("/")[-1]
    if dep.mode == "public":
        assert "?" not in seen["output_url"] and SANE_ZIP_NAME.match(last), seen["output_url"]
        assert SANE_ZIP_NAME.match(seen["output_url"].split("/")[-1])  # what kiosk-client saves it as
    else:
        assert urllib.parse.urlsplit(seen["output_url"]).query and last.endswith(".zip")
    return seen


def assert_client_summary(dep: Deployment, name: str, numbers: tuple[str, ...] = CLIENT_NUMBERS) -> None:
    summary = dep.frontend.client_summary(dep.jobs[name])
    for number in numbers:
        values = summary[number] if isinstance(summary[number], list) else [summary[number]]
        assert all(float(v) >= 0 for v in values), (number, summary[number])
    elapsed = dateparser.parse(summary["finished_at"]) - dateparser.parse(summary["created_at"])  # KC job.py:422-436
    assert elapsed.total_seconds() >= 0
    assert summary["output_url"] == dep.seen[name]["output_url"]


def assert_page_expires(dep: Deployment, name: str) -> None:
    assert dep.frontend.expire(dep.jobs[name], 3600) == 1  # else the page says "Hash not expired"


# ---- the job forms -----------------------------------------------------------------------------

def test_segmentation_default_form_on_a_grayscale_png(deployment):
    """The form's defaults (XYB, channels '0,', scale 1) on a grayscale PNG: done, objects in place."""
    dep = deployment
    job = dep.hashes["png"]
    assert (job["dimension_order"], job["channels"], job["scale"]) == ("XYB", "0,", "1")  # what the form wrote
    assert_page_done(dep, "png")
    assert_client_summary(dep, "png")
    zf = result_zip(dep, "png")
    assert_kiosk_named(zf, "cells")
    images = label_images(zf)
    assert images, "no label TIFF in the result"
    for entry, labels in images.items():
        assert_objects_in_place(labels, PNG, entry)
    assert_page_expires(dep, "png")


def test_a_160x256_tiff_with_xy_comes_back_160x256(deployment):
    dep = deployment
    assert_page_done(dep, "tif")
    assert_client_summary(dep, "tif")
    zf = result_zip(dep, "tif")
    assert_kiosk_named(zf, "wide")
    images = label_images(zf)
    assert images
    for entry, labels in images.items():
        assert_objects_in_place(labels, WIDE_TIF, entry)
    assert_page_expires(dep, "tif")


def test_a_zip_of_pngs_is_done_flat_mirroring_the_archive(deployment):
    dep = deployment
    seen = assert_page_done(dep, "zip")
    assert_client_summary(dep, "zip", CLIENT_NUMBERS + ZIP_NUMBERS)
    job = dep.hashes["zip"]
    children = job["children"].split(",")
    assert job["total_jobs"] == "3" and len(children) == 3 and set(job["children:done"].split(",")) == set(children)
    assert job["children:failed"] == "" and not seen["failures"]
    zf = result_zip(dep, "zip")
    names = zf.namelist()
    assert len(set(names)) == len(names) and not any(n.count("plate/") > 1 for n in names), names
    for member, pic in ZIP_MEMBERS.items():
        folder, stem = member.rsplit("/", 1) if "/" in member else ("", member)
        prefix = (folder + "/" if folder else "") + stem.rsplit(".", 1)[0]
        assert_kiosk_named(zf, prefix)  # `{dir}/{name}_batch_0_feature_0.tif`, the dir inside the archive
        images = {n: a for n, a in label_images(zf, prefix).items() if "/" not in n[len(folder) + 1 if folder else 0:]}
        assert images, (member, zf.namelist())
        for entry, labels in images.items():
            assert_objects_in_place(labels, pic, entry)
    assert_page_expires(dep, "zip")


def test_a_zip_with_one_broken_image_is_done_with_failures_naming_it(deployment):
    dep = deployment
    seen = assert_page_done(dep, "zip_broken", failures=True)
    assert_client_summary(dep, "zip_broken", CLIENT_NUMBERS + ZIP_NUMBERS)
    page = KioskFrontend.page_failures(seen["failures"])  # the page's query-string parse
    assert len(page) == 1
    (child, reason), = page.items()
    assert dep.redis.hget(child, "original_name") == "bad/broken.png" and reason and "\n" not in reason
    assert dep.hashes["zip_broken"]["children:failed"] == child
    images = label_images(result_zip(dep, "zip_broken"), "good")
    assert images
    for entry, labels in images.items():
        assert_objects_in_place(labels, GOOD, entry)
    assert_page_expires(dep, "zip_broken")


def test_a_zip_whose_every_image_fails_is_failed_with_one_line_and_each_childs_reason(deployment):
    dep = deployment
    seen = dep.seen["zip_all_bad"]
    assert seen["status"] == "failed" and seen["reason"] and "\n" not in seen["reason"]  # the page shows its last line
    assert "All 2 image(s)" in seen["reason"]
    page = KioskFrontend.page_failures(seen["failures"])
    names = sorted(dep.redis.hget(child, "original_name") for child in page)
    assert names == ["x.png", "y.png"] and all(page.values())
    assert_page_expires(dep, "zip_all_bad")  # the page expires a failed job too (FE Predict.js:76-85)


def test_a_kiosk_client_job_without_a_form(deployment):
    """kiosk-client sends no jobForm: dimension_order, channels and scale are '' (our automatic rules)."""
    dep = deployment
    job = dep.hashes["client"]
    assert (job["dimension_order"], job["channels"], job["scale"]) == ("", "", "")
    if dep.store == "s3":  # kiosk-client's relpath of the S3 location URL (kiosk-protocol.md §1.8)
        assert job["input_file_name"].startswith("uploads/../https:/test-bucket.s3.amazonaws.com/")
    assert_page_done(dep, "client")
    assert_client_summary(dep, "client")
    images = label_images(result_zip(dep, "client"))
    assert images
    for entry, labels in images.items():
        assert_objects_in_place(labels, CLIENT_TIF, entry)
    assert_page_expires(dep, "client")


def test_mesmer_default_form(deployment):
    """The mesmer form ('0,1', scale 1, no dimension order): done, `dim_order` for the visualizer, whole cells in place."""
    dep = deployment
    job = dep.hashes["mesmer"]
    assert (job["channels"], job["scale"], job["dimension_order"]) == ("0,1", "1", "")
    seen = assert_page_done(dep, "mesmer")
    assert seen["dim_order"] == "YXC"
    assert_client_summary(dep, "mesmer")
    zf = result_zip(dep, "mesmer")
    whole = tifffile.imread(io.BytesIO(zf.read("tissue_feature_0.tif")))  # (1, H, W) float32 (KRC base_consumer.py:478-504)
    assert whole.shape == (1, *TISSUE.shape[:2]) and whole.dtype == np.float32
    assert_found(CELL_TRUTH, whole[0], min_iou=0.6)
    assert_page_expires(dep, "mesmer")


def test_the_real_kiosk_client_saves_our_result(deployment, tmp_path):
    """kiosk-client 0.8.4's own download_output on a URL these workers produced (KC job.py:343-369)."""
    dep = deployment
    url = dep.seen["png"]["output_url"]
    out = tmp_path / "downloads"
    out.mkdir()
    proc = kiosk_venv.download(url, str(out))
    if dep.mode == "signed":  # the reason docs/kiosk.md requires OUTPUT_URL_MODE=public
        assert proc.returncode != 0 and list(out.iterdir()) == []
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = out / url.split("/")[-1]
    assert [p.name for p in out.iterdir()] == [saved.name]
    assert saved.read_bytes() == fetch(url)[1]
    with zipfile.ZipFile(saved) as zf:
        assert json.loads(zf.read("results.json"))


@pytest.mark.parametrize("model", ["NuclearSegmentation:1", "NuclearSegmentation:6"])  # threshold and DeepCell paths
def test_predict_retries_counts_the_jobs_tf_serving_retries(model):
    """kiosk-client reports `predict_retries`: Predict calls retried for this job (here one injected UNAVAILABLE)."""
    from redis_consumer.consumers.segmentation import SegmentationConsumer
    from redis_consumer.testing import run_job

    name, version = model.split(":")
    flaky = ModelServer(fail_rate=0.5, seed=1).start()  # draws 0.13 (fails), 0.85 (answers), ...
    steady = ModelServer().start()
    try:
        runs = [run_job(SegmentationConsumer, {"model_name": name, "model_version": version},
                        inputs={"cells.png": PNG.data}, model_server=server.address,
                        settings={"GRPC_BACKOFF": 0.01}) for server in (flaky, steady)]
    finally:
        flaky.stop()
        steady.stop()
    assert [r.status for r in runs] == ["done", "done"], [r.hash.get("reason") for r in runs]
    assert [r.hash["predict_retries"] for r in runs] == ["1", "0"]
    assert all(float(r.hash["prediction_time"]) == float(r.hash["predict_time"]) > 0 for r in runs)
