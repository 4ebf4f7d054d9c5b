"""Image loading: formats, layouts, kiosk fields, and header-first limits and corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from redis_consumer.errors import UserError
from redis_consumer.utils import image_io
from redis_consumer.utils.image_io import Limits, load_image


def test_single_page_tiff_any_dtype(tmp_path):
    for dtype in (np.uint8, np.uint16, np.int32, np.float32, np.float64):
        data = (np.arange(32 * 48).reshape(32, 48) % 200).astype(dtype)
        path = tmp_path / f"a_{np.dtype(dtype).name}.tif"
        tifffile.imwrite(path, data)
        out = load_image(str(path))
        assert out.shape == (1, 32, 48, 1)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out[0, :, :, 0], data)


def test_multipage_tiff_gives_frames(tmp_path):
    data = np.random.default_rng(0).integers(0, 1000, (5, 20, 30), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, data)
    out = load_image(str(path))
    assert out.shape == (5, 20, 30, 1)
    np.testing.assert_array_equal(out[3, :, :, 0], data[3])


def test_multichannel_tiff_with_axes_metadata(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (2, 16, 24), dtype=np.uint8)
    path = tmp_path / "cyx.tif"
    tifffile.imwrite(path, data, metadata={"axes": "CYX"})
    out = load_image(str(path))
    assert out.shape == (1, 16, 24, 2)
    np.testing.assert_array_equal(out[0, :, :, 1], data[1])


def test_dimension_order_and_channels_fields(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (3, 16, 24), dtype=np.uint8)
    path = tmp_path / "plain.npy"
    np.save(path, data)
    out = load_image(str(path), dimension_order="CYX", channels="2,0")
    assert out.shape == (1, 16, 24, 2)
    np.testing.assert_array_equal(out[0, :, :, 0], data[2])
    np.testing.assert_array_equal(out[0, :, :, 1], data[0])
    with pytest.raises(UserError, match="has 3 channel"):
        load_image(str(path), dimension_order="CYX", channels="5")
    with pytest.raises(UserError, match="dimension_order"):
        load_image(str(path), dimension_order="CQQ")


def test_png_rgb_and_grey_and_jpeg(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = load_image(str(tmp_path / "c.png"))
    assert out.shape == (1, 20, 30, 3)
    np.testing.assert_array_equal(out[0], rgb)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "g.png")
    assert load_image(str(tmp_path / "g.png")).shape == (1, 20, 30, 1)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    assert load_image(str(tmp_path / "c.jpg")).shape == (1, 20, 30, 3)


def test_format_is_sniffed_not_taken_from_the_name(tmp_path):
    path = tmp_path / "really_a_png.tif"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="PNG")
    assert image_io.sniff(str(path)) == "png"
    assert load_image(str(path)).shape == (1, 8, 8, 1)


def test_oversized_image_rejected_from_header_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((300, 200), np.uint8))
    monkeypatch.setattr(image_io, "_decode", lambda *a: pytest.fail("pixels decoded before the size check"))
    with pytest.raises(UserError) as err:
        load_image(str(path), Limits(height=256, width=256, frames=4), name="big.tif")
    msg = str(err.value)
    assert "300x200" in msg and "256x256" in msg and "MAX_IMAGE_HEIGHT" in msg


def test_oversized_png_header_only(tmp_path, monkeypatch):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 5000), np.uint8)).save(path)
    monkeypatch.setattr(image_io, "_decode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(UserError, match="10x5000"):
        load_image(str(path))


def test_too_many_frames(tmp_path):
    path = tmp_path / "frames.tif"
    tifffile.imwrite(path, np.zeros((10, 8, 8), np.uint8))
    with pytest.raises(UserError, match="10 frames.*MAX_IMAGE_FRAMES"):
        load_image(str(path), Limits(frames=4))


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"hello, this is text not an image", "not a supported image"),
    (b"II*\x00\x08\x00\x00\x00garbage", "corrupt or truncated"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "corrupt or truncated"),
])
def test_bad_files_are_user_errors_naming_the_file(tmp_path, content, match):
    path = tmp_path / "upload.tif"
    path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        load_image(str(path), name="cells.tif")
    assert "cells.tif" in str(err.value)


def test_truncated_tiff_and_png(tmp_path):
    data = np.random.default_rng(4).integers(0, 60000, (64, 64), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", data)
    Image.fromarray(data.astype(np.uint8)).save(tmp_path / "t.png")
    for name in ("t.tif", "t.png"):
        raw = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(UserError, match="corrupt or truncated"):
            load_image(str(cut))


def test_npy_object_arrays_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError):
        load_image(str(path))


@pytest.mark.parametrize("value,words", [(np.nan, "1 NaN"), (np.inf, "1 infinite"), (-np.inf, "1 infinite")])
def test_non_finite_float_pixels_refused(tmp_path, value, words):
    data = np.ones((16, 16), np.float32)
    data[3, 4] = value
    path = tmp_path / "f.tif"
    tifffile.imwrite(path, data)
    with pytest.raises(UserError, match=words) as err:
        load_image(str(path), name="cells.tif")
    assert "cells.tif" in str(err.value) and "finite" in str(err.value)


def test_non_finite_pixels_in_an_unselected_channel_are_ignored(tmp_path):
    data = np.ones((16, 16, 2), np.float64)
    data[..., 1] = np.nan
    path = tmp_path / "two.npy"
    np.save(path, data)
    assert load_image(str(path), channels="0").shape == (1, 16, 16, 1)
    with pytest.raises(UserError, match="256 NaN"):
        load_image(str(path))


def test_image_smaller_than_min_image_size_refused_from_header(tmp_path, monkeypatch):
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.zeros((5, 40), np.uint8))
    monkeypatch.setattr(image_io, "_decode", lambda *a: pytest.fail("pixels decoded before the size check"))
    with pytest.raises(UserError, match=r"5x40 pixels.*8x8 minimum \(MIN_IMAGE_SIZE\)"):
        load_image(str(path), Limits(min_size=8))
    monkeypatch.undo()
    assert load_image(str(path), Limits(min_size=5)).shape == (1, 5, 40, 1)


def test_more_than_four_dimensions_refused_naming_the_shape(tmp_path, monkeypatch):
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.zeros((2, 3, 2, 16, 16), np.uint8))
    monkeypatch.setattr(image_io, "_decode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(UserError, match=r"5 dimensions \(shape 2x3x2x16x16"):
        load_image(str(path))
    monkeypatch.undo()
    # singleton axes do not count: (1, 3, 1, 16, 16) is a 3-frame stack
    tifffile.imwrite(tmp_path / "single.tif", np.zeros((1, 3, 1, 16, 16), np.uint8))
    assert load_image(str(tmp_path / "single.tif")).shape == (3, 16, 16, 1)


def test_one_parsed_tiff_serves_header_and_pixels(tmp_path):
    from redis_consumer.utils import kiosk_layout

    stack = np.random.default_rng(5).integers(0, 4000, (64, 80, 2)).astype(np.uint16)  # one IFD per row
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack)
    with image_io.opened_tiff(str(path)) as tiff:
        assert len(tiff.pages) == 64
        header = image_io.read_header(str(path), tiff=tiff)
        assert header == image_io.read_header(str(path))
        np.testing.assert_array_equal(image_io.decode_pixels(str(path), header, "stack.tif", tiff), stack)
    assert tiff.filehandle.closed
    np.testing.assert_array_equal(kiosk_layout.load_kiosk_image(str(path)), stack)
    np.testing.assert_array_equal(load_image(str(path), dimension_order="YXC"), stack[np.newaxis])
    Image.fromarray(stack[..., 0].astype(np.uint8)).save(tmp_path / "a.png")
    with image_io.opened_tiff(str(tmp_path / "a.png")) as tiff:
        assert tiff is None
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\x00" * 20)  # tifffile opens it; the header says what is wrong
    with pytest.raises(UserError, match="bad.tif.* corrupt or truncated"):
        kiosk_layout.load_kiosk_image(str(tmp_path / "bad.tif"))
