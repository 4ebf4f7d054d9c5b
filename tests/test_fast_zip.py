"""utils/fast_zip: archives written from memory with ISA-L read back by zipfile and unzip."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redis_consumer.utils import fast_zip


def _members(rng: np.random.Generator) -> dict[str, bytes]:
    labels = np.zeros((512, 512), np.uint16)
    labels[100:200, 50:300] = 7
    labels[300:420, 310:500] = 4000
    return {
        "cells_labels.tif": labels.tobytes(),
        "noise.bin": rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes(),  # incompressible
        "results.json": b'{"cells": 2}\n',
        "empty.txt": b"",
        "overlay.png": b"\x89PNG fake but stored as is",
        "caf\u00e9/log.txt": b"line one\nline two\n",
    }


def test_archive_reads_back_in_zipfile_with_methods_and_crcs(tmp_path):
    members = _members(np.random.default_rng(0))
    path = tmp_path / "result.zip"
    with fast_zip.FastZipWriter(str(path)) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every CRC checks
        assert {i.filename: zf.read(i) for i in zf.infolist()} == members
        info = {i.filename: i for i in zf.infolist()}
    assert info["cells_labels.tif"].compress_type == zipfile.ZIP_DEFLATED
    assert info["cells_labels.tif"].compress_size < len(members["cells_labels.tif"]) // 20
    assert info["overlay.png"].compress_type == zipfile.ZIP_STORED  # already compressed formats are stored
    assert info["noise.bin"].compress_type == zipfile.ZIP_STORED  # deflate did not shrink it
    assert info["caf\u00e9/log.txt"].flag_bits & 0x800


@pytest.mark.skipif(shutil.which("unzip") is None, reason="unzip is not installed")
def test_unzip_tests_the_archive(tmp_path):
    path = tmp_path / "r.zip"
    fast_zip.write_zip(str(path), [("a.tif", np.arange(200_000, dtype=np.uint32)), ("b.json", "{}")])
    out = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No errors detected" in out.stdout


def test_numpy_members_and_file_objects_and_arrays_as_bytes():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    buf = io.BytesIO(b"prefix")  # an archive appended to existing content still reads
    buf.seek(0, io.SEEK_END)
    with fast_zip.FastZipWriter(buf) as zf:
        zf.writestr("a.raw", arr)
        zf.writestr("b.raw", memoryview(arr.tobytes()), compress=False)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert zf.read("a.raw") == arr.tobytes() == zf.read("b.raw")


def test_duplicate_names_and_non_contiguous_input_are_refused(tmp_path):
    with fast_zip.FastZipWriter(str(tmp_path / "d.zip")) as zf:
        zf.writestr("x", b"1")
        with pytest.raises(ValueError, match="duplicate"):
            zf.writestr("x", b"2")
        with pytest.raises(ValueError, match="contiguous"):
            zf.writestr("y", np.zeros((4, 4))[:, ::2])


def test_write_from_disk_keeps_name_and_content(tmp_path):
    src = tmp_path / "labels.tif"
    src.write_bytes(b"\x00" * 10_000 + b"end")
    with fast_zip.FastZipWriter(str(tmp_path / "w.zip")) as zf:
        zf.write(str(src))
    with zipfile.ZipFile(tmp_path / "w.zip") as zf:
        assert zf.read("labels.tif") == src.read_bytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=5), st.integers(0, 3))
def test_any_bytes_round_trip_at_every_level(blobs, level):
    buf = io.BytesIO()
    with fast_zip.FastZipWriter(buf, level=level) as zf:
        for i, blob in enumerate(blobs):
            zf.writestr(f"m{i}.bin", blob)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        assert zf.testzip() is None
        assert [zf.read(f"m{i}.bin") for i in range(len(blobs))] == blobs
