"""A job whose result cannot be stored (full or read-only bucket) ends with a reason naming the
bucket and the cause, as a system error, not "the worker hit an internal error (OSError)" (issue 15 #6).

Real redis-server, the real segmentation consumer, and a real tmpfs as the bucket (run as root).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import tifffile

from redis_consumer.consumers.segmentation import SegmentationConsumer
from tests.consumer_harness import Harness, LocalTF, settings_for, submit
from tests.test_consumers_postprocess import k_disks


@pytest.fixture
def tmpfs_bucket(tmp_path):
    mount = tmp_path / "bucket"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                            check=False)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); this test needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def run_job(rds, tmp_path, bucket, break_bucket):
    settings = settings_for(tmp_path, STORAGE_BUCKET=f"file://{bucket}", MAX_ATTEMPTS=1, STORAGE_RETRY_TIMEOUT=1.0,
                            MAX_IMAGE_HEIGHT=512, MAX_IMAGE_WIDTH=512)
    harness = Harness(rds, settings, SegmentationConsumer, tf=LocalTF())
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, k_disks(5, size=96, radius=8).astype(np.uint16))
    key = submit(rds, settings, str(path), model_name="NuclearSegmentation", model_version="1")
    break_bucket()
    harness.run_one()
    return rds.hgetall(key)


def test_full_bucket_job_reason_names_bucket_and_cause(rds, tmp_path, tmpfs_bucket):
    def fill():
        with open(tmpfs_bucket / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass

    job = run_job(rds, tmp_path, tmpfs_bucket, fill)
    assert job["status"] == "failed" and job["failure_type"] == "system", job
    reason = job["reason"]
    assert f"file://{tmpfs_bucket}" in reason and "is full" in reason and "no space left on device" in reason, reason
    assert "internal error" not in reason


def test_read_only_bucket_job_reason_names_bucket_and_cause(rds, tmp_path, tmpfs_bucket):
    job = run_job(rds, tmp_path, tmpfs_bucket,
                  lambda: subprocess.run(["mount", "-o", "remount,ro", str(tmpfs_bucket)], check=True))
    assert job["status"] == "failed" and job["failure_type"] == "system", job
    reason = job["reason"]
    assert f"file://{tmpfs_bucket}" in reason and "read-only" in reason and "internal error" not in reason, reason
