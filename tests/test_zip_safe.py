"""Safe zip planning and extraction: zip slip, links, bombs, nested archives, junk, corrupt files."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from redis_consumer.errors import UserError
from redis_consumer.utils import safe_zip

LIMITS = {"max_entries": 50, "max_bytes": 10_000_000, "max_ratio": 100.0}


def make_zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries:
            if isinstance(name, zipfile.ZipInfo):
                zf.writestr(name, data)
            else:
                zf.writestr(name, data)
    return str(path)


def test_good_entries_planned_and_bad_ones_reported(tmp_path):
    link = zipfile.ZipInfo("link.tif")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = make_zip(tmp_path / "a.zip", [
        ("cells/one.tif", b"II*\x00" + bytes(range(200))),
        ("two.PNG", b"\x89PNG" + bytes(range(100))),
        ("../evil.tif", b"x" * 10),
        ("/etc/passwd.tif", b"x" * 10),
        ("C:/windows.tif", b"x" * 10),
        (link, b"/etc/passwd"),
        ("inner.zip", b"PK" + bytes(50)),
        ("notes.txt", b"hello"),
        ("__MACOSX/._one.tif", b"junk"),
        ("empty.tif", b""),
    ])
    plan = safe_zip.plan(path, **LIMITS)
    assert [e.name for e in plan.entries] == ["cells/one.tif", "two.PNG"]
    assert plan.entries[0].basename == "one.tif"
    reasons = {s["name"]: s["reason"] for s in plan.skipped}
    assert "'..'" in reasons["../evil.tif"]
    assert "absolute" in reasons["/etc/passwd.tif"] and "absolute" in reasons["C:/windows.tif"]
    assert "link" in reasons["link.tif"]
    assert "nested archive" in reasons["inner.zip"]
    assert "not an image" in reasons["notes.txt"]
    assert "metadata" in reasons["__MACOSX/._one.tif"]
    assert "empty" in reasons["empty.tif"]


def test_zip_bomb_ratio_entry_skipped(tmp_path):
    path = make_zip(tmp_path / "bomb.zip", [("bomb.tif", b"\x00" * 5_000_000), ("ok.tif", bytes(range(256)) * 4)])
    plan = safe_zip.plan(path, **LIMITS)
    assert [e.name for e in plan.entries] == ["ok.tif"]
    assert "zip bomb" in plan.skipped[0]["reason"]


def test_total_uncompressed_limit_stops_archive(tmp_path):
    import os

    entries = [(f"{i}.tif", os.urandom(4000)) for i in range(5)]
    path = make_zip(tmp_path / "big.zip", entries)
    with pytest.raises(UserError, match="MAX_ZIP_BYTES"):
        safe_zip.plan(path, max_entries=50, max_bytes=10_000, max_ratio=100.0)


def test_entry_count_limit(tmp_path):
    path = make_zip(tmp_path / "many.zip", [(f"{i}.tif", b"abc") for i in range(6)])
    with pytest.raises(UserError, match="6 files.*MAX_ZIP_ENTRIES"):
        safe_zip.plan(path, max_entries=5, max_bytes=10**6, max_ratio=100.0)


def test_not_a_zip_and_truncated_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(UserError, match="not a readable zip"):
        safe_zip.plan(str(bad), **LIMITS, display_name="upload.zip")
    good = make_zip(tmp_path / "g.zip", [("a.tif", bytes(range(256)) * 8)])
    raw = Path(good).read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="not a readable zip"):
        safe_zip.plan(str(cut), **LIMITS)


def test_extract_streams_and_detects_corrupt_entry(tmp_path):
    data = bytes(range(256)) * 64
    path = make_zip(tmp_path / "c.zip", [("a.tif", data)])
    plan = safe_zip.plan(path, **LIMITS)
    with zipfile.ZipFile(path) as zf:
        assert safe_zip.extract(zf, plan.entries[0], str(tmp_path / "out")) == len(data)
    assert (tmp_path / "out").read_bytes() == data
    # flip bytes in the compressed data: CRC or inflate error -> UserError, partial file removed
    raw = bytearray(Path(path).read_bytes())
    raw[40:60] = b"\xff" * 20
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bytes(raw))
    with zipfile.ZipFile(broken) as zf, pytest.raises(UserError, match="corrupt"):
        safe_zip.extract(zf, plan.entries[0], str(tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_safe_basename():
    assert safe_zip.safe_basename("dir/sub/My Cells (1).tif", 3) == "My_Cells_1_.tif"
    assert safe_zip.safe_basename("dir/", 7) == "entry-7"
    assert ":" not in safe_zip.safe_basename("a:b.tif", 0)
    assert io  # keep import used
