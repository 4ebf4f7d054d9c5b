"""Hypothesis strategies for what a producer can write: job hashes, uploaded images and zips.

A `JobSpec` is one producer action: an optional file uploaded to the bucket, and a job hash
(raw bytes -> raw bytes) pushed on the image queue or the zip queue. `job_specs(exclude_known=...)`
draws them; with `exclude_known=True` it leaves out the input classes of the four known fleet-stopping
defects of issue 15 (so the rest of the input space can still be explored while they are fixed):

1. `non-utf8`: a byte sequence that is not UTF-8 in any field name or value (crash-loops the claim);
2. `long-quoted`: a kiosk field longer than 4 KiB (quoted into a reason, `logs.scrub()` backtracks);
3. `channels`: more than 16 channels in an image or 64 entries in `channels` (unbounded memory);
4. `non-utf8` jobs also never reach `dead-{queue}` (same input class as 1).

`exclude=("attempts-not-int", ...)` also leaves out classes this fuzzer found (FOUND_CLASSES).

Everything is built from hypothesis draws (numpy pixels come from a drawn seed), so a failing
example replays from the hypothesis database or with `derandomize=True`.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

#: Fields the kiosk frontend, kiosk-client or our own protocol read or write on a job hash.
KIOSK_FIELDS = (
    "input_file_name", "original_name", "model_name", "model_version", "channels", "dimension_order",
    "scale", "label", "status", "created_at", "updated_at", "attempts", "segmentation_type",
    "compartment", "url", "preprocess_function", "postprocess_function", "cuts", "reason",
    "failure_type", "output_file_name", "parent", "parent_queue", "identity_upload", "progress",
    "children_total", "children_done", "children_failed",
)
logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # classify() reads broken TIFFs on purpose
KNOWN_CLASSES = ("non-utf8", "long-quoted", "channels")
#: Classes this fuzzer found beyond the known ones (FUZZ_EXCLUDE=name,... leaves them out too).
FOUND_CLASSES = ("attempts-not-int", "counter-not-int")
_COUNTERS = (b"children_total", b"children_done", b"children_failed")
_INT = re.compile(rb"-?[0-9]{1,18}")
QUOTED_CAP = 4096  # `long-quoted`: longest kiosk-field value drawn when excluded
CHANNELS_CAP = 16

_PLAUSIBLE: dict[str, list[str]] = {
    "model_name": ["NuclearSegmentation", "Identity", "NoSuchModel", "NuclearSegmentation:1", "", " ",
                   "../NuclearSegmentation", "nuclearsegmentation"],
    "model_version": ["1", "0", "-1", "99", "abc", "1.5", "", "01", "1e3"],
    "channels": ["", "0", "0,1", "[0]", "[0, 1]", "-1", "0,0,0", "999", "a,b", "nan", "0;1", "[]", "{}"],
    "dimension_order": ["", "XYC", "CXY", "YX", "YXC", "CYX", "ZYXC", "XYZ", "CC", "Q", "BYXC", "XXYC"],
    "scale": ["", "1", "0.5", "2", "0", "-1", "nan", "inf", "-inf", "1e308", "1e-308", "abc", "0x10"],
    "label": ["", "0", "1", "-5", "x", "3"],
    "status": ["new", "new", "new", "", "waiting", "started", "exploded", "NEW", "done", "failed"],
    "created_at": ["2026-12-01T00:00:00Z", "garbage", "0", "9999-12-31T23:59:59", "", "-1",
                   "2026-13-45T99:99:99"],
    "updated_at": ["2026-12-01T00:00:00Z", "garbage", ""],
    "attempts": ["0", "1", "2", "99", "-1", "x", "", "1e9"],
    "segmentation_type": ["nuclear", "whole-cell", "both", "cytoplasm", "x", ""],
    "compartment": ["nuclear", "whole-cell", "both", "cytoplasm", "x", ""],
    "url": ["http://127.0.0.1:1/x.tif", "file:///etc/passwd", "s3://nope/x.tif", "", "not a url"],
    "parent": ["", "fuzz-zip:nope", "fuzz:nope"],
    "parent_queue": ["", "fuzz-zip", "fuzz", "nope"],
    "input_file_name": ["uploads/missing.tif", "../../../etc/passwd", "/etc/passwd", "", ".", "uploads/",
                        "uploads/good.tif"],
    "original_name": ["x.tif", "", "a/b/../c.png", "..", "name with spaces.tif"],
}
IMAGE_EXTS = (".tif", ".tiff", ".png", ".TIF", ".jpg", ".npy", ".zip", "", ".txt", ".tif.gz")


@dataclass
class JobSpec:
    """One producer action: upload `upload` (name, bytes) if set, then HSET `fields` and LPUSH."""

    queue_kind: str  # "image" or "zip"
    fields: dict[bytes, bytes]
    upload: tuple[str, bytes] | None = None
    tags: set[str] = field(default_factory=set)  # known classes this spec belongs to

    def describe(self, limit: int = 96) -> dict:
        """JSON-able repro: text or hex; a long value as its length and repeated pattern (or head)."""
        def show(b: bytes) -> object:
            if len(b) <= limit:
                try:
                    text = b.decode("utf-8")
                    if text.isprintable():
                        return text
                except UnicodeDecodeError:
                    pass
                return {"hex": b.hex()}
            for period in range(1, 17):  # drawn long values are a short pattern repeated
                if b == (b[:period] * (len(b) // period + 1))[: len(b)]:
                    return {"len": len(b), "repeat_hex": b[:period].hex()}
            return {"len": len(b), "head_hex": b[:limit].hex()}
        up = None
        if self.upload:
            up = {"name": self.upload[0], "len": len(self.upload[1]), "head_hex": self.upload[1][:limit].hex()}
        return {"queue": self.queue_kind, "fields": {str(show(k)): show(v) for k, v in self.fields.items()},
                "upload": up, "tags": sorted(self.tags)}


# -- byte values --------------------------------------------------------------------------------

def _text_bytes(max_size: int) -> st.SearchStrategy[bytes]:
    return st.text(max_size=max_size).map(lambda s: s.encode("utf-8"))


def _long(pattern: st.SearchStrategy[bytes], lo: int, hi: int) -> st.SearchStrategy[bytes]:
    """A long value from a short drawn pattern repeated (cheap to draw, shrinks well)."""
    return st.tuples(pattern.filter(bool), st.integers(lo, hi)).map(lambda t: (t[0] * (t[1] // len(t[0]) + 1))[: t[1]])


def values(name: str, exclude_known: bool, huge_ok: bool) -> st.SearchStrategy[bytes]:
    """A value for field `name`: plausible, arbitrary text/bytes, or long (up to 3 MB)."""
    small = _text_bytes(64) if exclude_known else st.one_of(_text_bytes(64), st.binary(max_size=64))
    options = [small, st.just(b""), st.sampled_from([b"\x00", b"\x00\x00abc", b"\r\n", b"%s%d{0}", b"'\"\\"])]
    plausible = _PLAUSIBLE.get(name)
    if plausible:
        options.append(st.sampled_from(plausible).map(str.encode))
        options.append(st.sampled_from(plausible).map(str.encode))  # weight plausible values up
    if name == "channels":
        count = st.integers(0, 64 if exclude_known else 20_000)
        options.append(count.map(lambda n: ",".join(str(i % 4) for i in range(n)).encode()))
    cap = QUOTED_CAP if (exclude_known and not huge_ok) else 3_000_000
    pattern = _text_bytes(16) if exclude_known else st.binary(min_size=1, max_size=16)
    options.append(_long(pattern, 65, min(cap, 4096)))
    if cap > 4096:
        options.append(_long(pattern, 4097, cap))
    drawn = st.one_of(options)
    if exclude_known:  # a repeated pattern cut at a byte length may split a character
        drawn = drawn.map(lambda b: b.decode("utf-8", "ignore").encode("utf-8"))
    return drawn


# -- uploaded files ---------------------------------------------------------------------------

def _pixels(seed: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith("float"):
        return (rng.random(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 60000), size=shape, dtype=dtype)


@st.composite
def valid_image(draw, exclude_known: bool = True, small: bool = False) -> bytes:
    """A decodable TIFF, PNG or .npy of a drawn shape and dtype."""
    import tifffile
    from PIL import Image

    fmt = draw(st.sampled_from(["tiff", "tiff", "png", "npy"]))
    side = 48 if small else 96
    h, w = draw(st.integers(1, side)), draw(st.integers(1, side))
    seed = draw(st.integers(0, 2**32 - 1))
    if fmt == "png":
        mode = draw(st.sampled_from(["L", "RGB", "RGBA", "I;16", "1", "P"]))
        img = Image.fromarray(_pixels(seed, (h, w, 3), "uint8"), "RGB").convert(mode)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        return buf.getvalue()
    max_c = CHANNELS_CAP if exclude_known else 600
    c = draw(st.one_of(st.integers(1, 4), st.integers(1, max_c)))
    frames = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64", "bool", "int8"]))
    layout = draw(st.sampled_from(["YX", "YXC", "CYX", "ZYXC", "BYXC"]))
    shape = {"YX": (h, w), "YXC": (h, w, c), "CYX": (c, h, w), "ZYXC": (frames, h, w, c),
             "BYXC": (frames, h, w, c)}[layout]
    arr = _pixels(seed, shape, dtype)
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, arr, allow_pickle=False)
    else:
        compression = draw(st.sampled_from([None, "zlib", "lzma"]))  # what tifffile writes without imagecodecs
        tifffile.imwrite(buf, arr, compression=compression)
    return buf.getvalue()


_BOMB: dict[tuple[int, int], bytes] = {}


def channel_bomb(channels: int = 400, side: int = 2048) -> bytes:
    """A ~10 KB TIFF: one page of `channels` separate zero planes of side x side (class `channels`).

    Every plane's strip offset points at the same zlib strip, so it is written in milliseconds;
    tifffile reads it as one (channels, side, side) uint8 image, as the issue's 1.9 MB file.
    """
    if (channels, side) not in _BOMB:
        strip = zlib.compress(bytes(side * side), 9)
        strip_at = 8
        arrays_at = strip_at + len(strip) + (len(strip) & 1)
        offsets = struct.pack(f"<{channels}I", *([strip_at] * channels))
        counts = struct.pack(f"<{channels}I", *([len(strip)] * channels))
        bits = struct.pack(f"<{channels}H", *([8] * channels))
        ifd_at = arrays_at + len(offsets) + len(counts) + len(bits)
        ifd_at += ifd_at & 1
        tags = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, channels, arrays_at + 2 * len(offsets)),
                (259, 3, 1, 8), (262, 3, 1, 1), (273, 4, channels, arrays_at), (277, 3, 1, channels),
                (278, 4, 1, side), (279, 4, channels, arrays_at + len(offsets)), (284, 3, 1, 2)]
        out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at))
        out += strip + b"\x00" * (len(strip) & 1) + offsets + counts + bits
        out += b"\x00" * (ifd_at - len(out))
        out += struct.pack("<H", len(tags))
        for tag, typ, count, value in tags:
            inline = typ == 3 and count == 1
            out += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if inline else struct.pack("<I", value))
        out += struct.pack("<I", 0)
        _BOMB[(channels, side)] = bytes(out)
    return _BOMB[(channels, side)]


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` unchanged, truncated, bit-flipped, with garbage appended, or replaced by random bytes."""
    how = draw(st.sampled_from(["none", "none", "truncate", "flip", "flip", "append", "random", "empty", "header"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "flip" and data:
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(buf)
    if how == "append":
        return data + draw(st.binary(min_size=1, max_size=256))
    if how == "random":
        return draw(st.binary(max_size=4096))
    if how == "empty":
        return b""
    if how == "header":
        return data[:8]
    return data


def image_bytes(exclude_known: bool, small: bool = False) -> st.SearchStrategy[bytes]:
    base = valid_image(exclude_known=exclude_known, small=small).flatmap(mutated)
    if exclude_known or small:
        return base
    return st.one_of(base, st.builds(lambda c: channel_bomb(c), st.sampled_from([100, 400])))


def _zip_bytes(entries: list[tuple[str, bytes]], stored: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # duplicate names are drawn on purpose
        for name, data in entries:
            try:
                zf.writestr(name, data)
            except (IndexError, ValueError):  # a name zipfile cannot store (empty after its NUL cut)
                continue
    return buf.getvalue()


def _bad_crc(data: bytes) -> bytes:
    """Corrupt the CRC-32 of the first local header (and its central-directory copy)."""
    buf = bytearray(data)
    if buf[:4] == b"PK\x03\x04":
        crc = struct.unpack_from("<I", buf, 14)[0] ^ 0xDEADBEEF
        struct.pack_into("<I", buf, 14, crc)
        cd = buf.find(b"PK\x01\x02")
        if cd >= 0:
            struct.pack_into("<I", buf, cd + 16, crc)
    return bytes(buf)


_ENTRY_NAMES = st.one_of(
    st.tuples(st.text(min_size=1, max_size=12), st.sampled_from(IMAGE_EXTS)).map("".join),
    st.sampled_from(["a.tif", "dir/b.png", "../up.tif", "/abs.tif", "dir/", "a.tif", "__MACOSX/._a.tif",
                     ".hidden.tif", "c:\\win.tif", "x" * 300 + ".tif"]),
)


@st.composite
def zip_bytes(draw, exclude_known: bool = True) -> bytes:
    """Zips of images: plain, nested, many entries, duplicate/hostile names, bad CRC, truncated."""
    entries = draw(st.lists(st.tuples(_ENTRY_NAMES, image_bytes(exclude_known, small=True)), max_size=5))
    shape = draw(st.sampled_from(["plain", "plain", "nested", "many", "badcrc", "truncate", "flip"]))
    stored = draw(st.booleans())
    if shape == "nested":
        inner = _zip_bytes(entries or [("a.tif", b"")], stored)
        entries = [*entries, (draw(st.sampled_from(["inner.zip", "d/inner.zip"])), inner)]
    if shape == "many":
        tiny = draw(valid_image(exclude_known=True, small=True))
        count = draw(st.integers(10, 300))  # the fleet runs MAX_ZIP_ENTRIES=200: some pass, some exceed it
        entries = entries + [(f"m/{i}.tif", tiny) for i in range(count)]
    data = _zip_bytes(entries, stored or shape == "badcrc")
    if shape == "badcrc":
        return _bad_crc(data)
    if shape in ("truncate", "flip"):
        return draw(mutated(data))
    return data


# -- job specs ---------------------------------------------------------------------------------

def _field_names(exclude_known: bool) -> st.SearchStrategy[bytes]:
    unknown = _text_bytes(24) if exclude_known else st.one_of(_text_bytes(24), st.binary(max_size=24))
    return st.one_of(st.sampled_from(KIOSK_FIELDS).map(str.encode), unknown.filter(bool))


@st.composite
def job_specs(draw, exclude_known: bool = False, exclude: tuple[str, ...] = ()) -> JobSpec:
    """One producer action; see the module docstring for `exclude_known`; `exclude` names FOUND_CLASSES."""
    kind = draw(st.sampled_from(["image", "image", "image", "zip"]))
    base = {b"status": b"new", b"model_name": b"NuclearSegmentation", b"model_version": b"1"}
    # a random subset of the kiosk's own fields, then arbitrary (known and unknown) extra fields
    base = {k: v for k, v in base.items() if draw(st.integers(0, 9)) > 0}
    upload = None
    if draw(st.integers(0, 9)) > 0:  # usually a real upload referenced by input_file_name
        ext = draw(st.sampled_from([".zip", ".zip", ".tif"]) if kind == "zip" else st.sampled_from(IMAGE_EXTS))
        data = draw(zip_bytes(exclude_known) if kind == "zip" else image_bytes(exclude_known))
        name = f"uploads/f{draw(st.integers(0, 10**9))}{ext}"
        upload = (name, data)
        base[b"input_file_name"] = name.encode()
        base[b"original_name"] = name.rsplit("/", 1)[1].encode()
    names = draw(st.lists(_field_names(exclude_known), max_size=8, unique=True))
    fields = dict(base)
    for n in names:
        huge_ok = n.decode("utf-8", "replace") not in KIOSK_FIELDS
        fields[n] = draw(values(n.decode("utf-8", "replace"), exclude_known, huge_ok))
    if draw(st.booleans()) and b"input_file_name" in fields and upload and fields[b"input_file_name"] != upload[0].encode():
        fields[b"input_file_name"] = upload[0].encode()  # keep the reference to the upload half the time
    if "attempts-not-int" in exclude and b"attempts" in fields and not _INT.fullmatch(fields[b"attempts"]):
        fields[b"attempts"] = b"0"
    if "counter-not-int" in exclude:
        for name in _COUNTERS:
            if name in fields and not _INT.fullmatch(fields[name]):
                fields[name] = b"0"
    spec = JobSpec(kind, fields, upload)
    spec.tags = classify(spec)
    if exclude_known:
        assert not spec.tags & set(KNOWN_CLASSES), spec.tags
    assert not spec.tags & set(exclude), spec.tags
    return spec


def classify(spec: JobSpec) -> set[str]:
    """The known defect classes (KNOWN_CLASSES) this spec falls into."""
    tags = set()
    for k, v in spec.fields.items():
        for b in (k, v):
            try:
                b.decode("utf-8")
            except UnicodeDecodeError:
                tags.add("non-utf8")
        if k.decode("utf-8", "replace") in KIOSK_FIELDS and len(v) > QUOTED_CAP:
            tags.add("long-quoted")
        if k == b"channels" and v.count(b",") >= 64:
            tags.add("channels")
        if k == b"attempts" and not _INT.fullmatch(v):
            tags.add("attempts-not-int")
        if k in _COUNTERS and not _INT.fullmatch(v):
            tags.add("counter-not-int")
    if spec.upload and len(spec.upload[1]) and spec.upload[1] in _BOMB.values():
        tags.add("channels")
    if spec.upload and _tiff_channels(spec.upload[1]) > CHANNELS_CAP:
        tags.add("channels")
    return tags


def _tiff_channels(data: bytes) -> int:
    """Largest axis count other than Y/X of a readable TIFF/npy upload (0 when unreadable)."""
    import tifffile

    try:
        if data[:6] == b"\x93NUMPY":
            shape = np.load(io.BytesIO(data), allow_pickle=False).shape
        else:
            with tifffile.TiffFile(io.BytesIO(data)) as tf:
                shape = tf.series[0].shape
    except Exception:  # noqa: BLE001 - any unreadable upload simply has no channel axis to count
        return 0
    return max([1, *sorted(shape)[:-2]])


def dumps_spec(spec: JobSpec) -> str:
    return json.dumps(spec.describe(), sort_keys=True)


def _zeros_tiff(side: int) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((side, side), np.uint8), compression="zlib")
    return buf.getvalue()


def regressions() -> dict[str, JobSpec]:
    """Minimal repros of every defect class this harness knows (issue 15's and FOUND_CLASSES).

    test_fuzz_all_inputs runs each as an explicit example, so a fix can be checked by name.
    """
    good = {b"status": b"new", b"model_name": b"NuclearSegmentation", b"model_version": b"1",
            b"input_file_name": b"uploads/good.tif", b"original_name": b"good.tif"}
    zipped = {**good, b"input_file_name": b"uploads/good.zip", b"original_name": b"good.zip"}
    specs = {
        "non-utf8 field name": JobSpec("image", {**good, b"\xbb": b"A"}),
        "non-utf8 value": JobSpec("image", {**good, b"original_name": b"\xff.tif"}),
        "200 KB scale": JobSpec("image", {**good, b"scale": b"a" * 200_000}),
        "12,000 channels": JobSpec("image", {**good, b"input_file_name": b"uploads/plain416.tif",
                                             b"channels": ",".join(["0"] * 12_000).encode()},
                                   ("uploads/plain416.tif", _zeros_tiff(416))),
        "400-channel TIFF": JobSpec("image", {**good, b"input_file_name": b"uploads/bomb.tif"},
                                    ("uploads/bomb.tif", channel_bomb(400))),
        "attempts not an integer": JobSpec("image", {**good, b"attempts": b"x"}),
        "children_done not an integer": JobSpec("zip", {**zipped, b"children_done": b"x"}),
        "children_total not an integer": JobSpec("zip", {**zipped, b"children_total": b"x"}),
    }
    for spec in specs.values():
        spec.tags = classify(spec)
    return specs
