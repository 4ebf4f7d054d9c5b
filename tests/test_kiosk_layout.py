"""Kiosk image layout: loading, every dropdown `dimension_order`, restore, channels slots, scale, label.

The expected layouts follow kiosk-redis-consumer 0.17.2 segmentation_consumer.py:89-108 (B and C
move, X/Y never transposed) and utils.py:91-108 (TIFF as stored, PNG/JPEG as (H, W, C)).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from redis_consumer.errors import UserError
from redis_consumer.utils import image_io, kiosk_layout
from redis_consumer.utils.image_io import Limits, load_image
from redis_consumer.utils.kiosk_layout import (
    KIOSK_ORDERS,
    load_for_kiosk,
    load_kiosk_image,
    parse_label,
    parse_mesmer_channels,
    parse_scale,
    parse_segmentation_channels,
    plan_layout,
)

ROOT = Path(__file__).resolve().parents[1]


def kiosk_reference(order: str, image: np.ndarray) -> np.ndarray:
    """The kiosk's rule, restated from its description (facts sheet §3.1), to compare against."""
    if order == "XYB":
        image = np.moveaxis(image, -1, 0)
    elif order == "CXY":
        image = np.moveaxis(image, 0, -1)
    elif order == "CXYB":
        image = np.swapaxes(image, 0, -1)
    if "B" not in order:
        image = image[np.newaxis]
    if "C" not in order:
        image = image[..., np.newaxis]
    return image


SHAPES = {2: (10, 12), 3: (3, 10, 12), 4: (2, 10, 12, 3)}


@pytest.mark.parametrize("order", KIOSK_ORDERS)
def test_every_dropdown_order_matches_the_kiosk_and_restores(order):
    shape = (10, 12, 3, 2)[: len(order)]
    data = np.arange(np.prod(shape)).reshape(shape)
    layout = plan_layout(shape, order)
    out = layout.to_bxyc(data)
    np.testing.assert_array_equal(out, kiosk_reference(order, data))
    assert out.shape == layout.bxyc_shape
    # spatial axes are never transposed: ax0 is the size of the order's X axis
    assert out.shape[1] == shape[order.index("X")] and out.shape[2] == shape[order.index("Y")]
    np.testing.assert_array_equal(layout.restore(out), data)  # an output with C channels goes back exactly
    labels = out[..., :1] * 0 + 7
    restored = layout.restore(labels)
    assert restored.shape == tuple(1 if a == "C" else s for a, s in zip(order, shape)) or (
        "C" not in order and restored.shape == shape)


@pytest.mark.parametrize("ndim", [2, 3, 4])
@pytest.mark.parametrize("order", KIOSK_ORDERS)
def test_wrong_letter_count_is_a_user_error_where_the_kiosk_crashes(order, ndim):
    shape = SHAPES[ndim]
    if len(order) == ndim:
        assert plan_layout(shape, order).order == order
        return
    with pytest.raises(UserError, match=f"has {len(order)} axes but the image 'x.tif' has {ndim}") as err:
        plan_layout(shape, order, "x.tif")
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_two_slot_output_restored_per_input_layout():
    layout = plan_layout((10, 12, 4), "XYB")  # 4 frames, last axis
    out = np.zeros((4, 10, 12, 2))
    out[2, 3, 5, 1] = 9
    back = layout.restore(out)
    assert back.shape == (10, 12, 4, 2) and layout.restored_axes(2) == "XYBC"
    assert back[3, 5, 2, 1] == 9
    assert plan_layout((3, 10, 12), "CXY").restore(np.ones((1, 10, 12, 2))).shape == (2, 10, 12)


def test_tiff_xy_is_not_transposed_and_label_has_input_height_width(tmp_path):
    data = np.zeros((160, 256), np.uint16)
    data[10, 200] = 5  # row 10, column 200
    tifffile.imwrite(tmp_path / "a.tif", data)
    image, layout = load_for_kiosk(str(tmp_path / "a.tif"), "XY")
    assert image.shape == (1, 160, 256, 1) and image[0, 10, 200, 0] == 5
    assert layout.restore(image[..., :1]).shape == (160, 256)
    # the generic loader agrees now (it used to read X as width and transpose)
    legacy = load_image(str(tmp_path / "a.tif"), dimension_order="XY")
    assert legacy.shape == (1, 160, 256, 1) and legacy[0, 10, 200, 0] == 5


def test_png_defaults_of_the_web_form(tmp_path):
    grey = np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    image, layout = load_for_kiosk(str(tmp_path / "g.png"), "XYB")  # page default on a grayscale PNG
    assert image.shape == (1, 20, 30, 1) and layout.input_shape == (20, 30, 1)
    np.testing.assert_array_equal(image[0, ..., 0], grey)
    assert load_image(str(tmp_path / "g.png"), dimension_order="XYB").shape == (1, 20, 30, 1)
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    image, _ = load_for_kiosk(str(tmp_path / "c.png"), "XYB")  # kiosk: 3 batches of one channel
    assert image.shape == (3, 20, 30, 1)
    np.testing.assert_array_equal(image[2, ..., 0], rgb[..., 2])
    assert load_kiosk_image(str(tmp_path / "g.png")).shape == (20, 30, 1)


def test_2d_tiff_with_page_default_fails_with_a_hint(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(UserError, match="has 3 axes but the image 'flat.tif' has 2 .*use XY"):
        load_for_kiosk(str(tmp_path / "flat.tif"), "XYB")


def test_cxyb_and_bxyc_tiffs(tmp_path):
    data = np.arange(2 * 16 * 20 * 3, dtype=np.uint16).reshape(2, 16, 20, 3)
    tifffile.imwrite(tmp_path / "b.tif", data, photometric="rgb")
    image, layout = load_for_kiosk(str(tmp_path / "b.tif"), "BXYC")
    np.testing.assert_array_equal(image, data)
    image, layout = load_for_kiosk(str(tmp_path / "b.tif"), "CXYB")
    assert image.shape == (3, 16, 20, 2) and image[1, 4, 5, 0] == data[0, 4, 5, 1]
    assert layout.restore(image).shape == data.shape


@pytest.mark.parametrize("shape,axes,order", [
    ((16, 20), "", "XY"),
    ((16, 20, 3), "", "XYC"),
    ((5, 16, 20), "QYX", "BXY"),
    ((2, 16, 20), "CYX", "CXY"),
    ((4, 16, 20, 2), "", "BXYC"),
])
def test_auto_order_for_jobs_without_a_form(shape, axes, order):
    layout = plan_layout(shape, "", axes=axes)
    assert layout.order == order and layout.auto


def test_auto_order_refuses_what_it_cannot_guess():
    with pytest.raises(UserError, match="set dimension_order to XYB, XYC, BXY or CXY"):
        plan_layout((16, 3, 20), "")
    with pytest.raises(UserError, match="not one the kiosk offers"):
        plan_layout((16, 20), "YX" * 500)


def test_multipage_tiff_auto_is_frames(tmp_path):
    data = np.random.default_rng(2).integers(0, 99, (4, 16, 20), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack")  # 4 pages
    image, layout = load_for_kiosk(str(tmp_path / "s.tif"), "")
    assert layout.order == "BXY" and image.shape == (4, 16, 20, 1)
    tifffile.imwrite(tmp_path / "p.tif", data[:3], photometric="rgb", planarconfig="separate")  # 1 page, 3 samples
    image, layout = load_for_kiosk(str(tmp_path / "p.tif"), "")
    assert layout.order == "CXY" and image.shape == (1, 16, 20, 3)


def test_limits_checked_from_the_header_in_kiosk_layout(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "tall.tif", np.zeros((300, 20), np.uint8))
    monkeypatch.setattr(image_io, "_decode", lambda *a: pytest.fail("decoded before the checks"))
    with pytest.raises(UserError, match="300x20 pixels"):
        load_for_kiosk(str(tmp_path / "tall.tif"), "XY", Limits(height=256))
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((16, 16, 20), np.uint8), photometric="minisblack")
    with pytest.raises(UserError, match="20 frames.*MAX_IMAGE_FRAMES"):
        load_for_kiosk(str(tmp_path / "stack.tif"), "XYB", Limits(frames=4))
    tifffile.imwrite(tmp_path / "chan.tif", np.zeros((20, 20, 20), np.uint8))
    with pytest.raises(UserError, match="20 channels.*MAX_IMAGE_CHANNELS"):
        load_for_kiosk(str(tmp_path / "chan.tif"), "XYC")


# ---- channels, scale, label ----

@pytest.mark.parametrize("field,channels,slots", [
    ("0,", 1, {0: 0}),
    (",0", 1, {1: 0}),
    ("0", 1, {0: 0}),
    ("", 1, {0: 0}),
    (None, 1, {0: 0}),
    ("0,,", 1, {0: 0}),
    ("1,0", 2, {0: 1, 1: 0}),
    (",,2", 3, {2: 2}),
    (" 0 , 1 ", 2, {0: 0, 1: 1}),
    ("0,0", 1, {0: 0, 1: 0}),
])
def test_segmentation_channel_slots(field, channels, slots):
    assert parse_segmentation_channels(field, channels) == slots
    assert list(parse_segmentation_channels(field, channels)) == sorted(slots)


@pytest.mark.parametrize("field,match", [
    ("0,1,2,3", r"has 4 entries; a segmentation job \(nuclear, cytoplasm, phase\) takes at most 3"),
    ("3,", "channel 3 as the nuclear channel but the image 'x.png' has 3"),
    (",5", "channel 5 as the cytoplasm"),
    ("-1", "counted from 0"),
    ("a", "counted from 0"),
    (",,", "fills no model slot"),
    (",".join(["0"] * 12000), "12000 entries"),
])
def test_segmentation_channel_errors(field, match):
    with pytest.raises(UserError, match=match) as err:
        parse_segmentation_channels(field, 3, "x.png")
    assert len(str(err.value)) < 300


def test_mesmer_channels():
    assert parse_mesmer_channels("", 2) == (0, 1)
    assert parse_mesmer_channels("1,0", 2) == (1, 0)
    with pytest.raises(UserError, match="leaves the membrane channel empty"):
        parse_mesmer_channels("0,", 2)
    with pytest.raises(UserError, match="leaves the nuclear channel empty"):
        parse_mesmer_channels(",1", 2)
    with pytest.raises(UserError, match="has 1 channel"):
        parse_mesmer_channels("", 1)
    with pytest.raises(UserError, match="has 3 entries"):
        parse_mesmer_channels("0,1,2", 3)


@pytest.mark.parametrize("field,value", [("", 1.0), (None, 1.0), ("1", 1.0), ("0.3334", 0.3334), ("2", 2.0),
                                         ("0.1", 0.1), ("10", 10.0), (" 0.5 ", 0.5)])
def test_scale(field, value):
    assert parse_scale(field) == pytest.approx(value)


@pytest.mark.parametrize("field,match", [("0.05", "outside the range 0.1 to 10"), ("11", "outside"),
                                         ("nan", "not a number"), ("inf", "outside"), ("abc", "not a number"),
                                         ("1" * 200_000, "not a number")])
def test_bad_scale(field, match):
    with pytest.raises(UserError, match=match) as err:
        parse_scale(field)
    assert len(str(err.value)) < 200


def test_label_is_read_but_never_fails():
    assert parse_label("") is None and parse_label("2") == 2 and parse_label("x" * 10_000) is None


def test_legacy_channels_field_is_bounded(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((16, 16, 2), np.uint8))
    with pytest.raises(UserError, match="12000 entries"):
        load_image(str(tmp_path / "a.npy"), channels=",".join(["1"] * 12000))


# ---- hostile channel axis: fails from the header with little memory ----

PROBE = textwrap.dedent(r"""
    import re, sys
    from redis_consumer.errors import UserError
    from redis_consumer.utils import image_io, kiosk_layout
    how, path = sys.argv[1], sys.argv[2]
    try:
        if how == "legacy":
            image_io.load_image(path, name="c400.tif")
        else:
            kiosk_layout.load_for_kiosk(path, how if how != "auto" else "", name="c400.tif")
        print("LOADED")
    except UserError as exc:
        print("USERERROR", exc)
    # VmHWM is this process image's peak RSS; ru_maxrss is not used because Linux carries the forking
    # parent's peak across exec, so a big pytest process would inflate it.
    with open("/proc/self/status") as fh:
        print("RSS_KB", re.search(r"VmHWM:\s+(\d+) kB", fh.read()).group(1))
""")


@pytest.fixture(scope="module")
def c400(tmp_path_factory):
    """400 channels of 2048x2048 (1.6 GB of pixels) in a sparse file: header only on disk."""
    path = tmp_path_factory.mktemp("c400") / "c400.tif"
    tifffile.imwrite(path, shape=(400, 2048, 2048), dtype="uint8", metadata={"axes": "CYX"})
    return path


@pytest.mark.parametrize("how,match", [("legacy", "400 channels"), ("CXY", "400 channels"),
                                       ("auto", "400 channels"), ("BXY", "400 frames")])
def test_400_channel_tiff_fails_fast_with_little_memory(c400, how, match):
    proc = subprocess.run([sys.executable, "-c", PROBE, how, str(c400)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert "LOADED" not in proc.stdout and match in lines["USERERROR"]
    print(how, "peak RSS KB", lines["RSS_KB"])
    assert int(lines["RSS_KB"]) < 400 * 1024, lines["RSS_KB"]


def test_decoded_bytes_budget(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((4, 64, 64), np.float64))
    with pytest.raises(UserError, match="MAX_DECODED_BYTES"):
        load_for_kiosk(str(tmp_path / "f.tif"), "BXY", Limits(decoded_bytes=100_000))
    with pytest.raises(UserError, match="MAX_DECODED_BYTES"):
        load_image(str(tmp_path / "f.tif"), Limits(decoded_bytes=100_000))
    assert kiosk_layout.load_for_kiosk(str(tmp_path / "f.tif"), "BXY")[0].shape == (4, 64, 64, 1)


# ---- property: any dropdown order on any fitting shape round-trips and never transposes ----

@settings(max_examples=200, deadline=None)
@given(order=st.sampled_from(KIOSK_ORDERS), sizes=st.lists(st.integers(1, 5), min_size=4, max_size=4),
       features=st.integers(1, 3))
def test_layout_round_trip_property(order, sizes, features):
    shape = tuple(sizes[: len(order)])
    data = np.arange(int(np.prod(shape))).reshape(shape)
    layout = plan_layout(shape, order)
    out = layout.to_bxyc(data)
    b, x, y, _c = out.shape
    assert (x, y) == (shape[order.index("X")], shape[order.index("Y")])
    np.testing.assert_array_equal(layout.restore(out), data)
    labels = np.broadcast_to(out[..., :1], (b, x, y, features))
    back = layout.restore(labels)
    assert back.ndim == len(layout.restored_axes(features))
    for axis, letter in enumerate(layout.restored_axes(features)):
        expected = {"B": b, "X": x, "Y": y, "C": features}[letter]
        assert back.shape[axis] == expected
