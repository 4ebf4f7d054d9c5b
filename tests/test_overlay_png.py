"""utils/overlay: the ISA-L-framed palette PNG decodes (PIL) to exactly the indexed pixels."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from redis_consumer.utils import overlay


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # PIL checks chunk CRCs and inflates IDAT here
    return image


def _scene(h: int = 300, w: int = 410) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    plane = rng.random((h, w), dtype=np.float32)
    labels = np.zeros((h, w), np.int32)
    labels[20:80, 30:120] = 1
    labels[150:260, 200:400] = 2
    return plane, labels


def test_save_png_is_a_valid_palette_png_with_the_overlay_pixels(tmp_path):
    plane, labels = _scene()
    path = overlay.save_png(str(tmp_path / "o.png"), plane, labels)
    with open(path, "rb") as fh:
        data = fh.read()
    image = _decode(data)
    assert image.mode == "P" and image.size == (410, 300)
    assert np.array_equal(np.asarray(image), overlay.indexed(plane, labels))
    assert np.array_equal(np.asarray(image.convert("RGB")), overlay.render(plane, labels))
    # every chunk's CRC is right (PIL is lenient about some chunks; check them all ourselves)
    pos = 8
    kinds = []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big") == zlib.crc32(kind + body)
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]


def test_png_bytes_refuses_what_a_palette_png_cannot_hold():
    with pytest.raises(ValueError, match="uint8"):
        overlay.png_bytes(np.zeros((4, 4), np.uint16), overlay.PALETTE)
    with pytest.raises(ValueError, match="pixel"):
        overlay.png_bytes(np.zeros((0, 4), np.uint8), overlay.PALETTE)
    with pytest.raises(ValueError, match="palette"):
        overlay.png_bytes(np.zeros((4, 4), np.uint8), [1, 2])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 70), st.integers(1, 70), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_any_index_image_round_trips_through_pil(h, w, seed, level):
    index = np.random.default_rng(seed).integers(0, overlay.OUTLINE_INDEX + 1, (h, w), dtype=np.uint8)
    image = _decode(overlay.png_bytes(index, overlay.PALETTE, level=level))
    assert image.size == (w, h)
    assert np.array_equal(np.asarray(image), index)


@pytest.mark.parametrize("dtype,shape,kind", [
    (np.uint16, (1024, 1024), "camera"), (np.uint16, (333, 517), "sparse"), (np.uint8, (90, 70), "camera"),
    (np.uint16, (64, 64), "constant"), (np.int16, (200, 150), "camera"), (np.uint16, (1, 1), "camera"),
    (np.uint16, (700, 300), "bright"), (np.int16, (120, 90), "signed"),
])
def test_grey_levels_by_table_equal_the_per_pixel_normalisation(dtype, shape, kind):
    from redis_consumer.utils.labels import normalize

    rng = np.random.default_rng(sum(shape))
    top = np.iinfo(dtype).max
    if kind == "camera":
        plane = np.clip(rng.normal(top * 0.1, top * 0.02, shape), 0, top)
    elif kind == "sparse":
        plane = np.where(rng.random(shape) < 0.02, top, 0)
    elif kind == "bright":
        plane = rng.integers(top - 40, top + 1, shape)
    elif kind == "signed":
        plane = rng.integers(-500, 500, shape)
    else:
        plane = np.full(shape, 7)
    plane = plane.astype(dtype)
    shown = normalize(plane.astype(np.float32)[np.newaxis, :, :, np.newaxis])[0, :, :, 0]
    expected = overlay.indexed(shown, np.zeros(shape, np.int32), clipped=True)
    np.testing.assert_array_equal(overlay.grey_levels(plane), expected)
    # and a float plane takes the per-pixel path itself
    np.testing.assert_array_equal(overlay.grey_levels(plane.astype(np.float32)), expected)


def test_grey_levels_with_and_without_the_c_gather(monkeypatch):
    from redis_consumer.deepcell import _native

    rng = np.random.default_rng(9)
    planes = [np.clip(rng.normal(3000, 600, (300, 257)), 0, 65535).astype(np.uint16),
              rng.integers(0, 65536, (64, 65)).astype(np.uint16), np.full((9, 9), 65535, np.uint16),
              rng.integers(0, 200, (40, 30)).astype(np.uint8)]
    with_c = [overlay.grey_levels(p) for p in planes]
    monkeypatch.setattr(_native, "clahe_kernels", None)  # a tree whose C kernels were never built
    for plane, got in zip(planes, with_c):
        np.testing.assert_array_equal(got, overlay.grey_levels(plane))
        np.testing.assert_array_equal(got, overlay.grey_levels(plane.astype(np.float32)))  # the per-pixel path


@pytest.mark.parametrize("odd", [False, True])
def test_grey_levels_of_a_strided_channel_equal_those_of_its_copy(odd):
    """A channel of an (X, Y, C) image (and a reversed, an unaligned one) is read in place by the
    C gather, with the levels of its contiguous copy; the gather refuses a value past a short table."""
    from redis_consumer.deepcell import _clahe_kernels

    rng = np.random.default_rng(int(odd))
    raw = np.zeros(2 * 3 * 210 * 170 + 2, np.uint8)
    image = np.ndarray((210, 170, 3), np.uint16, raw.data, int(odd))
    image[...] = np.clip(rng.normal(900, 300, (210, 170, 3)), 0, 65535).astype(np.uint16)
    for plane in (image[..., 1], image[::-1, ::2, 2], image[..., 0].T):
        np.testing.assert_array_equal(overlay.grey_levels(plane), overlay.grey_levels(np.ascontiguousarray(plane)))
    out = np.empty((210, 170), np.uint8)
    with pytest.raises(ValueError, match="past the table"):
        _clahe_kernels.gather_u8(image[..., 1], np.zeros(int(image[..., 1].max()), np.uint8), out)
    _clahe_kernels.gather_u8(image[..., 1], np.arange(65536).astype(np.uint8), out)
    np.testing.assert_array_equal(out, image[..., 1].astype(np.uint8))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_outlines_by_the_c_pass_equal_the_numpy_outlines(h, w, seed, objects):
    """indexed_levels' C pass (int32 labels) marks exactly the numpy `outlines` pixels, on
    labels with few values (long runs and many neighbours alike), negatives and 1-pixel axes."""
    from redis_consumer.deepcell import _native

    assert _native.overlay_kernels is not None, "redis_consumer.deepcell._overlay_kernels is not built"
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, objects + 1, (h, w)).astype(np.int32)
    labels[rng.random((h, w)) < 0.5] = 0
    levels = rng.integers(0, overlay.GREY_LEVELS, (h, w), dtype=np.uint8)
    expected = levels.copy()
    expected[overlay.outlines(labels)] = overlay.OUTLINE_INDEX
    np.testing.assert_array_equal(overlay.indexed_levels(levels.copy(), labels), expected)
    # the numpy path where the kernel does not apply (another dtype) gives the same
    np.testing.assert_array_equal(overlay.indexed_levels(levels.copy(), labels.astype(np.int64)), expected)


def test_indexed_levels_with_and_without_the_c_kernel(monkeypatch):
    from redis_consumer.deepcell import _native

    rng = np.random.default_rng(4)
    labels = np.repeat(np.repeat(rng.integers(0, 30, (64, 80)), 5, axis=0), 3, axis=1).astype(np.int32)
    levels = rng.integers(0, overlay.GREY_LEVELS, labels.shape, dtype=np.uint8)
    with_c = overlay.indexed_levels(levels.copy(), labels)
    monkeypatch.setattr(_native, "overlay_kernels", None)
    np.testing.assert_array_equal(with_c, overlay.indexed_levels(levels.copy(), labels))


def test_mark_outlines_refuses_what_does_not_fit():
    from redis_consumer.deepcell import _overlay_kernels

    labels = np.zeros((8, 9), np.int32)
    with pytest.raises(ValueError, match="format"):
        _overlay_kernels.mark_outlines(labels.astype(np.int64), np.zeros((8, 9), np.uint8), 16)
    with pytest.raises(ValueError, match="does not match"):
        _overlay_kernels.mark_outlines(labels, np.zeros((8, 8), np.uint8), 16)
    with pytest.raises(ValueError, match="does not match"):
        _overlay_kernels.mark_outlines(labels, np.zeros((8, 18), np.uint8)[:, ::2], 16)
    rows = np.zeros((8, 10), np.uint8)  # a PNG's rows after their filter byte: a row stride of 10
    labels[2:5, 3:6] = 7
    _overlay_kernels.mark_outlines(labels, rows[:, 1:], 16)
    expected = np.where(overlay.outlines(labels), 16, 0).astype(np.uint8)
    np.testing.assert_array_equal(rows[:, 1:], expected)
    assert not rows[:, 0].any()
