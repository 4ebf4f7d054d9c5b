"""End to end: real worker processes, the gRPC dev model server, and each storage backend.

A TIFF goes through `segmentation` on local, S3 (moto) and GCS (emulator) buckets; a zip goes
through `segmentation-zip` with a zip worker and a segmentation worker side by side.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile

import numpy as np
import pytest
import tifffile

from redis_consumer.settings import Settings
from redis_consumer.utils.timestamps import now_iso
from tests.helpers.model_server import ModelServer
from tests.helpers.net import wait_until
from tests.helpers.redis_server import env_for
from tests.helpers.workers import start_worker
from tests.test_consumers_postprocess import k_disks

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def model_server():
    server = ModelServer().start()
    yield server
    server.stop()


def backend_env(kind, request, tmp_path):
    """(STORAGE_BUCKET-ish env, storage client for the test's own uploads/downloads)."""
    from redis_consumer import storage

    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    if kind == "local":
        env = {"STORAGE_BUCKET": f"file://{tmp_path}/bucket"}
    elif kind == "s3":
        server = request.getfixturevalue("s3_server")
        env = {**server.env(), "STORAGE_BUCKET": f"s3://test-bucket/{prefix}"}
    else:
        server = request.getfixturevalue("gcs_server")
        env = {**server.env(), "STORAGE_BUCKET": f"gs://test-bucket/{prefix}"}
    for name in ("STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if name in env:
            request.getfixturevalue("monkeypatch").setenv(name, env[name])
    settings = Settings.from_env(env, OUTPUT_URL_MODE="key")
    return env, storage.get_client(env["STORAGE_BUCKET"], settings)



def worker_env(redis_server, model_server, env, **extra):
    settings = {"QUEUE": "segmentation", "TF_HOST": "127.0.0.1", "TF_PORT": str(model_server.port),
                "EMPTY_QUEUE_TIMEOUT": "0.5", "OUTPUT_URL_MODE": "key", "HEARTBEAT_INTERVAL": "0.5",
                "HEARTBEAT_TTL": "5", **env, **extra}
    return env_for(redis_server, **settings)


def kiosk_job(rds, queue, name, **fields):
    """Exactly what the kiosk frontend writes: HMSET of the producer fields, then LPUSH."""
    key = f"{queue}:{name}:{uuid.uuid4().hex}"
    stamp = now_iso()
    rds.hset(key, mapping={"status": "new", "input_file_name": f"uploads/{name}", "original_name": name,
                           "model_name": "NuclearSegmentation", "model_version": "1",
                           "created_at": stamp, "updated_at": stamp, "identity_upload": "frontend", **fields})
    rds.lpush(queue, key)
    return key


def upload_bytes(client, tmp_path, key, data):
    path = tmp_path / f"up-{uuid.uuid4().hex}"
    path.write_bytes(data)
    client.upload(str(path), key)


def fetch_zip(client, tmp_path, key):
    dest = tmp_path / f"down-{uuid.uuid4().hex}"
    dest.mkdir()
    return zipfile.ZipFile(client.download(key, str(dest)))


def tif_bytes(k, size=128, **kw):
    buf = io.BytesIO()
    tifffile.imwrite(buf, k_disks(k, size=size, radius=7, seed=k).astype(np.uint16), **kw)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["local", "s3", "gcs"])
def test_tiff_job_on_each_backend(kind, request, rds, redis_server, model_server, procs, tmp_path):
    env, client = backend_env(kind, request, tmp_path)
    upload_bytes(client, tmp_path, "uploads/cells.tif", tif_bytes(6))
    key = kiosk_job(rds, "segmentation", "cells.tif")
    procs.append(start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="segmentation"),
                              str(tmp_path / "worker.log")))
    wait_until(lambda: rds.hget(key, "status") in ("done", "failed"), timeout=90, message="job to end")
    job = rds.hgetall(key)
    assert job["status"] == "done", (job, (tmp_path / "worker.log").read_text()[-3000:])
    assert job["object_count"] == "6"
    zf = fetch_zip(client, tmp_path, job["output_file_name"])
    assert json.loads(zf.read("results.json"))["object_count"] == 6


def test_zip_with_two_workers_and_a_bad_file(rds, redis_server, model_server, procs, tmp_path, request):
    env, client = backend_env("local", request, tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4):
            zf.writestr(f"img{i}.tif", tif_bytes(i + 1, size=96))
        zf.writestr("corrupt.tif", b"II*\x00" + b"\x01" * 40)
        zf.writestr("../../slip.tif", tif_bytes(1, size=96))
    upload_bytes(client, tmp_path, "uploads/plate.zip", buf.getvalue())
    key = kiosk_job(rds, "segmentation-zip", "plate.zip")
    procs.append(start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="zip"), str(tmp_path / "z.log")))
    procs.append(start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="segmentation"),
                              str(tmp_path / "s.log")))
    wait_until(lambda: rds.hget(key, "status") in ("done", "failed"), timeout=120, message="zip job to end")
    job = rds.hgetall(key)
    assert job["status"] == "done", job
    assert job["children_done"] == "4" and job["children_failed"] == "1" and job["progress"] == "100"
    zf = fetch_zip(client, tmp_path, job["output_file_name"])
    failures = json.loads(zf.read("failures.json"))
    assert [f["name"] for f in failures["failed"]] == ["corrupt.tif"]
    assert [s["name"] for s in failures["skipped"]] == ["../../slip.tif"]
    assert sum(n.endswith("_labels.tif") for n in zf.namelist()) == 4
    assert not os.path.exists(tmp_path / "slip.tif")


def test_unknown_model_fails_with_the_servers_words(rds, redis_server, model_server, procs, tmp_path, request):
    env, client = backend_env("local", request, tmp_path)
    upload_bytes(client, tmp_path, "uploads/x.tif", tif_bytes(1, size=64))
    key = kiosk_job(rds, "segmentation", "x.tif", model_name="NoSuchModel", model_version="7")
    procs.append(start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="segmentation"),
                              str(tmp_path / "w.log")))
    wait_until(lambda: rds.hget(key, "status") in ("done", "failed"), timeout=60, message="job to end")
    job = rds.hgetall(key)
    assert job["status"] == "failed" and job["failure_type"] == "user", job
    assert "NoSuchModel" in job["reason"] and job["attempts"] == "1"


def test_zip_worker_sigkilled_during_fan_out_is_recovered_without_duplicates(rds, redis_server, model_server, procs,
                                                                               tmp_path, request):
    import signal

    env, client = backend_env("local", request, tmp_path)
    n = 120
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"w{i:03d}.tif", tif_bytes(1 + i % 3, size=32))
    upload_bytes(client, tmp_path, "uploads/many.zip", buf.getvalue())
    key = kiosk_job(rds, "segmentation-zip", "many.zip")
    fast = {"HEARTBEAT_INTERVAL": "0.3", "HEARTBEAT_TTL": "1.5"}
    first = start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="zip", **fast), str(tmp_path / "z1.log"))
    procs.append(first)
    wait_until(lambda: rds.hget(key, "status") == "uploading" or rds.llen("segmentation") > 0, timeout=60,
               interval=0.005, message="fan-out to start")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    procs.append(start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="zip", **fast),
                              str(tmp_path / "z2.log")))
    procs.append(start_worker(worker_env(redis_server, model_server, env, CONSUMER_TYPE="segmentation", **fast),
                              str(tmp_path / "s.log")))
    wait_until(lambda: rds.hget(key, "status") in ("done", "failed"), timeout=150, message="zip job to end")
    job = rds.hgetall(key)
    assert job["status"] == "done" and job["children_done"] == str(n) and job["children_failed"] == "0", job
    assert int(job["attempts"]) >= 2  # really recovered after the kill
    children = rds.lrange(f"children:{key}", 0, -1)
    assert len(children) == len(set(children)) == n
    assert [rds.hget(c, "attempts") for c in children] == ["1"] * n  # no child ran twice
    assert rds.get("stats:segmentation:finished") == str(n)  # exactly n child completions
