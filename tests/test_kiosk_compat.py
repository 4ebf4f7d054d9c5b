"""A DeepCell Kiosk frontend pointed at our Redis works unchanged.

The job is written the way the kiosk frontend writes it (HMSET of its fields, key
`segmentation:<name>:<uuid>`, LPUSH), the worker is started the way the kiosk's deployment
starts it (`python consume_redis_events.py`, REDIS_HOST/REDIS_PORT, CONSUMER_TYPE=image), and the
fields the kiosk reads back are checked.
"""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from datetime import UTC, datetime

import numpy as np
import pytest
import tifffile

from tests.helpers.model_server import ModelServer
from tests.helpers.net import wait_until
from tests.helpers.workers import start_worker
from tests.test_consumers_postprocess import k_disks

pytestmark = pytest.mark.timeout(180)

#: What the kiosk frontend's createJob puts in the hash (plus `status=new`).
KIOSK_FIELDS = ("input_file_name", "original_name", "model_name", "model_version", "status", "created_at",
                "updated_at", "url", "identity_upload", "channels", "dimension_order", "scale", "label")


@pytest.fixture(scope="module")
def model_server():
    server = ModelServer().start()
    yield server
    server.stop()


def kiosk_env(redis_server, model_server, bucket, consumer_type):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "QUEUE", "CONSUMER_TYPE", "STORAGE_"))}
    env.update({
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port), "QUEUE": "segmentation",
        "CONSUMER_TYPE": consumer_type, "TF_HOST": "127.0.0.1", "TF_PORT": str(model_server.port),
        "STORAGE_BUCKET": f"file://{bucket}", "METRICS_PORT": "0", "ALLOW_ROOT": "true",
        "EMPTY_QUEUE_TIMEOUT": "0.5", "MAX_IMAGE_HEIGHT": "2048", "MAX_IMAGE_WIDTH": "2048",
    })
    return env


def frontend_submit(rds, bucket, queue, name, data):
    """The kiosk frontend: upload to the bucket, HMSET the hash, LPUSH the key."""
    (bucket / "uploads").mkdir(parents=True, exist_ok=True)
    (bucket / "uploads" / name).write_bytes(data)
    key = f"{queue}:{name}:{uuid.uuid4().hex}"
    now = datetime.now(UTC).replace(tzinfo=None).isoformat()  # the frontend writes naive UTC
    fields = {"input_file_name": f"uploads/{name}", "original_name": name, "model_name": "",  # the page sends ''
              "model_version": "", "status": "new", "created_at": now, "updated_at": now, "url": "",
              "identity_upload": "kiosk-frontend-abc", "channels": "", "dimension_order": "", "scale": "",
              "label": ""}
    assert set(fields) == set(KIOSK_FIELDS)
    args = [x for pair in fields.items() for x in pair]
    rds.execute_command("HMSET", key, *args)
    rds.lpush(queue, key)
    return key


def tif(k):
    buf = io.BytesIO()
    tifffile.imwrite(buf, k_disks(k, size=128, radius=7).astype(np.uint16))
    return buf.getvalue()


def test_kiosk_image_and_zip_jobs_end_done_with_the_fields_the_kiosk_reads(rds, redis_server, model_server, procs,
                                                                             tmp_path):
    bucket = tmp_path / "bucket"
    procs.append(start_worker(kiosk_env(redis_server, model_server, bucket, "image"), str(tmp_path / "image.log")))
    procs.append(start_worker(kiosk_env(redis_server, model_server, bucket, "zip"), str(tmp_path / "zip.log")))
    image_key = frontend_submit(rds, bucket, "segmentation", "cells.tif", tif(5))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.tif", tif(2))
        zf.writestr("b.tif", tif(3))
    zip_key = frontend_submit(rds, bucket, "segmentation-zip", "plate.zip", buf.getvalue())
    for key in (image_key, zip_key):
        wait_until(lambda k=key: rds.hget(k, "status") in ("done", "failed"), timeout=120, message=f"{key} to end")
    for key in (image_key, zip_key):
        job = rds.hgetall(key)
        assert job["status"] == "done", job
        assert job["output_url"].startswith("file://") and job["output_file_name"].endswith(".zip")
        for field in ("upload_time", "total_time", "download_time"):  # a zip parent's: the children's, comma-joined
            assert all(float(v) >= 0 for v in job[field].split(","))
        assert job["finished_at"] and job["identity_started"] and job["total_jobs"]
        path = job["output_url"][len("file://"):]
        assert zipfile.is_zipfile(path)
        assert rds.ttl(key) > 0  # finished jobs expire (EXPIRE_TIME)
    image = rds.hgetall(image_key)
    for field in ("predict_time", "postprocess_time"):
        assert float(image[field]) >= 0
    assert float(image["prediction_time"]) == float(image["predict_time"]) and image["predict_retries"] == "0"
    with zipfile.ZipFile(image["output_url"][len("file://"):]) as zf:  # NUCLEAR_MODEL, kiosk-named float32
        labels = tifffile.imread(io.BytesIO(zf.read("cells_batch_0_feature_0.tif")))
    assert labels.dtype == np.float32 and labels.shape == (128, 128) and len(np.unique(labels)) == 5 + 1
    assert rds.hget(zip_key, "total_jobs") == "2"
    assert rds.llen("segmentation") == 0 and rds.llen("segmentation-zip") == 0
