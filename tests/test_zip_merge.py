"""Raw member copy between zips: bytes, CRC and names survive; the result passes testzip()."""

from __future__ import annotations

import os
import zipfile

from redis_consumer.utils import zip_merge


def test_copy_raw_keeps_content_and_compression(tmp_path):
    src = tmp_path / "src.zip"
    payloads = {"a.tif": os.urandom(1000) + b"\x00" * 50_000, "b.png": os.urandom(3000), "c/ü.json": b"{}"}
    with zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in payloads.items():
            zf.writestr(name, data, zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED)
    out_path = tmp_path / "out.zip"
    with zipfile.ZipFile(out_path, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("first.txt", "before")
        with zipfile.ZipFile(src) as zin:
            for info in zin.infolist():
                zip_merge.copy_raw(zin, info, out, f"child/{info.filename}")
        out.writestr("failures.json", "[]")
    with zipfile.ZipFile(out_path) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == ["first.txt", "child/a.tif", "child/b.png", "child/c/ü.json", "failures.json"]
        for name, data in payloads.items():
            assert zf.read(f"child/{name}") == data
        assert zf.getinfo("child/b.png").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("child/a.tif").compress_size < 10_000


def test_copy_from_streamed_zip_with_data_descriptors(tmp_path):
    """Members written through ZipFile.open('w') to a non-seekable stream carry data descriptors."""
    class Unseekable:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            return self.f.write(b)

        def flush(self):
            self.f.flush()

        def tell(self):
            raise OSError("not seekable")

    src = tmp_path / "stream.zip"
    with open(src, "wb") as raw, zipfile.ZipFile(Unseekable(raw), "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("x.bin", "w") as dst:
        dst.write(b"hello" * 1000)
    out_path = tmp_path / "o.zip"
    with zipfile.ZipFile(out_path, "w") as out, zipfile.ZipFile(src) as zin:
        zip_merge.copy_raw(zin, zin.getinfo("x.bin"), out, "y.bin")
    with zipfile.ZipFile(out_path) as zf:
        assert zf.testzip() is None and zf.read("y.bin") == b"hello" * 1000
