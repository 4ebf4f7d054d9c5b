"""Generate the bad-input corpus: files and job hashes that must each fail cleanly.

The files are generated at test time (nothing binary is committed; a zip bomb in git helps no one):
`python tests/data/bad/generate.py OUTDIR` writes them and prints the case table as JSON, and
`tests/test_bad_inputs.py` calls `build(outdir)` directly.

Each `Case` says which queue it goes to (`image` jobs or `zip` archives), which file (if any) is
uploaded as its input, the extra hash fields, and words the failure reason should contain. Case
kinds: `file` (an uploaded input), `fields` (the hash itself is wrong), `raw` (the job key is not
even a hash).
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Case:
    name: str
    queue: str = "image"  # image | zip
    file: str | None = None  # file name under the corpus dir (uploaded as uploads/<file>)
    fields: dict[str, str] = field(default_factory=dict)  # extra / overriding hash fields
    drop: tuple[str, ...] = ()  # hash fields to leave out
    kind: str = "file"  # file | fields | raw
    expect: tuple[str, ...] = ()  # lower-case words one of which the reason should contain


# --- image builders ----------------------------------------------------------------------------

def _tiff(array) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def good_tiff(size: int = 64, seed: int = 0) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    return _tiff((rng.random((size, size)) * 255).astype("uint8"))


def _huge_header_tiff(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 1-byte TIFF whose IFD claims width x height 8-bit pixels (a decompression-bomb header)."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 0),  # StripOffsets (patched below)
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, min(width * height, 0xFFFFFFFF)),  # StripByteCounts (a lie)
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = ifd_offset + ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_offset
        if typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += b"\x00"
    return bytes(out)


def _png(width: int = 16, height: int = 16) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="PNG")
    return buf.getvalue()


def _png_bad_crc() -> bytes:
    data = bytearray(_png())
    # IHDR chunk: 8-byte signature, 4 length, 4 type, 13 data, then its CRC at 29..33
    data[29:33] = bytes(b ^ 0xFF for b in data[29:33])
    return bytes(data)


# --- zip builders ------------------------------------------------------------------------------

def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    info = zipfile.ZipInfo("link.tif")
    info.create_system = 3  # unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return _zip([(info, b"/etc/passwd")])


def _encrypted_zip() -> bytes:
    """An entry flagged encrypted (bit 0; zipfile cannot write real encryption): readers must refuse it."""
    return _set_flag(_zip([("secret.tif", good_tiff())], compression=zipfile.ZIP_STORED), 0x1)


def _set_flag(data: bytes, bit: int) -> bytes:
    """Set a general-purpose flag bit on the first local header and central-directory entry."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        struct.pack_into("<H", out, at + offset, struct.unpack_from("<H", out, at + offset)[0] | bit)
    return bytes(out)


def _non_utf8_zip() -> bytes:
    """An entry flagged UTF-8 (bit 11) whose name bytes are not valid UTF-8."""
    data = bytearray(_zip([("cellsXX.tif", good_tiff())], compression=zipfile.ZIP_STORED))
    needle = b"cellsXX.tif"
    start = 0
    while (at := data.find(needle, start)) != -1:
        data[at + 5:at + 7] = b"\xff\xfe"
        start = at + 1
    return _set_flag(bytes(data), 0x800)  # claim UTF-8 names


def _bomb_zip(megabytes: int = 64) -> bytes:
    """One entry of zeros compressed ~1000:1 (64 MB -> ~64 KB); far past MAX_ZIP_RATIO."""
    zeros = b"\x00" * (1 << 20)
    info = zipfile.ZipInfo("bomb.tif")
    info.compress_type = zipfile.ZIP_DEFLATED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, zf.open(info, "w", force_zip64=True) as entry:
        for _ in range(megabytes):
            entry.write(zeros)
    return buf.getvalue()


# --- the corpus --------------------------------------------------------------------------------

def files() -> dict[str, bytes]:
    """File name -> bytes of every input the corpus uploads (plus `good.tif` and `good.zip`)."""
    import numpy as np

    rng = np.random.default_rng(1)
    good = good_tiff()
    nan = rng.random((32, 32)).astype("float32")
    nan[3:9, 3:9] = np.nan
    inf = rng.random((32, 32)).astype("float32")
    inf[0, :] = np.inf
    return {
        "good.tif": good,
        "good.zip": _zip([("a.tif", good_tiff(seed=2)), ("b.tif", good_tiff(seed=3))]),
        "zero-byte.tif": b"",
        "truncated.tif": good[: len(good) // 3],
        "huge-header.tif": _huge_header_tiff(),
        "bad-crc.png": _png_bad_crc(),
        "truncated.png": _png()[:40],
        "text-named.tif": b"this is a text file, not an image\n" * 20,
        "html-named.png": b"<html><body>404 Not Found</body></html>\n",
        "rgb-channels.tif": _tiff((rng.random((32, 32, 3)) * 255).astype("uint8")),
        "nan-pixels.tif": _tiff(nan),
        "inf-pixels.tif": _tiff(inf),
        "one-pixel.tif": _tiff(np.zeros((1, 1), dtype="uint8")),
        "five-d.tif": _tiff((rng.random((2, 3, 2, 16, 16)) * 255).astype("uint8")),
        "many-frames.tif": _tiff(np.zeros((200, 8, 8), dtype="uint8")),
        "too-wide.tif": _tiff(np.zeros((4, 5000), dtype="uint8")),
        "complex.npy": _npy(np.zeros((8, 8), dtype="complex64")),
        "object.npy": _npy_object(),
        "bomb.zip": _bomb_zip(),
        "slip.zip": _zip([("../../evil.tif", good)]),
        "absolute.zip": _zip([("/etc/cron.d/evil.tif", good)]),
        "symlink.zip": _symlink_zip(),
        "nested.zip": _zip([("inner.zip", _zip([("a.tif", good)]))]),
        "encrypted.zip": _encrypted_zip(),
        "non-utf8.zip": _non_utf8_zip(),
        "empty.zip": _zip([]),
        "not-images.zip": _zip([("notes.txt", b"hello"), ("data.csv", b"a,b\n1,2\n")]),
        "not-a-zip.zip": b"PK\x03\x04 this is not really a zip archive",
    }


def _npy(array) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _npy_object() -> bytes:
    """A pickled object array: loading it would run code; readers must refuse (allow_pickle=False)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


CASES: list[Case] = [
    Case("zero-byte file", file="zero-byte.tif", expect=("empty", "not a", "read", "image")),
    Case("truncated TIFF", file="truncated.tif", expect=("truncat", "corrupt", "read", "image")),
    Case("TIFF header claims 100,000 x 100,000 pixels", file="huge-header.tif", expect=("100000", "large", "limit", "max_image")),
    Case("PNG with a bad CRC", file="bad-crc.png", expect=("png", "corrupt", "read", "image")),
    Case("truncated PNG", file="truncated.png", expect=("png", "corrupt", "read", "image", "truncat")),
    Case("text file named .tif", file="text-named.tif", expect=("not", "image", "read")),
    Case("HTML error page named .png", file="html-named.png", expect=("not", "image", "read")),
    # kiosk `channels` slots: an RGB image runs slot 0 on channel 0 by default; channel 5 does not exist
    Case("channel slot beyond the image's channels (RGB, channels=5)", file="rgb-channels.tif",
         fields={"channels": "5"}, expect=("channel",)),
    Case("NaN pixels", file="nan-pixels.tif", expect=("nan", "finite", "invalid")),
    Case("Inf pixels", file="inf-pixels.tif", expect=("inf", "finite", "invalid")),
    Case("1x1 image", file="one-pixel.tif", expect=("small", "1x1", "1 x 1", "pixel", "least")),
    Case("5-D array", file="five-d.tif", expect=("dimension", "5", "shape", "axes")),
    Case("huge frame count (200 > MAX_IMAGE_FRAMES)", file="many-frames.tif", expect=("frame", "max_image_frames")),
    Case("image wider than MAX_IMAGE_WIDTH", file="too-wide.tif", expect=("width", "wide", "large", "max_image")),
    Case("complex-valued .npy", file="complex.npy", expect=("complex", "dtype", "type", "numeric")),
    Case("pickled object .npy", file="object.npy", expect=("object", "pickle", "dtype", "type")),
    Case("zip bomb", queue="zip", file="bomb.zip", expect=("bomb", "compress", "ratio", "no image")),
    Case("zip slip", queue="zip", file="slip.zip", expect=("..", "leaves", "safety", "no image")),
    Case("absolute path in zip", queue="zip", file="absolute.zip", expect=("absolute", "safety", "no image")),
    Case("symlink entry", queue="zip", file="symlink.zip", expect=("link", "safety", "no image")),
    Case("nested zip", queue="zip", file="nested.zip", expect=("nested", "archive", "no image")),
    Case("encrypted zip", queue="zip", file="encrypted.zip", expect=("encrypt", "no image")),
    Case("non-UTF-8 names in zip", queue="zip", file="non-utf8.zip", expect=("utf", "name", "readable", "no image", "zip")),
    Case("empty zip", queue="zip", file="empty.zip", expect=("no image", "empty", "no file")),
    Case("zip without images", queue="zip", file="not-images.zip", expect=("no image", "not an image")),
    Case("file named .zip that is not a zip", queue="zip", file="not-a-zip.zip", expect=("zip",)),
    Case("missing input_file_name", kind="fields", drop=("input_file_name",), expect=("input_file_name",)),
    Case("key pointing outside the bucket", kind="fields", fields={"input_file_name": "../../etc/passwd"},
         expect=("bucket", "outside", "..", "key", "allowed")),
    Case("absolute key", kind="fields", fields={"input_file_name": "/etc/passwd"},
         expect=("bucket", "outside", "absolute", "key", "allowed")),
    Case("object that does not exist", kind="fields", fields={"input_file_name": "uploads/no-such-file.tif"},
         expect=("not", "exist", "found", "missing")),
    Case("unknown model", file="good.tif", fields={"model_name": "NoSuchModel", "model_version": "1"},
         expect=("nosuchmodel", "model")),
    Case("unknown version", file="good.tif", fields={"model_name": "NuclearSegmentation", "model_version": "99"},
         expect=("99", "version")),
    Case("model returns a wrong shape", file="good.tif", fields={"model_name": "WrongShape", "model_version": "1"},
         expect=("shape", "model", "output")),
    Case("hash with an unknown status", kind="fields", file="good.tif", fields={"status": "exploded"},
         expect=("status",)),
    Case("job key that is not a hash", kind="raw"),
]


def build(outdir: str | os.PathLike) -> list[Case]:
    """Write every corpus file into `outdir`; return the cases."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files().items():
        (out / name).write_bytes(data)
    return CASES


def main(argv: list[str]) -> int:
    outdir = argv[1] if len(argv) > 1 else str(Path(__file__).parent / "files")
    cases = build(outdir)
    print(json.dumps({"dir": outdir, "cases": [asdict(c) for c in cases]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

