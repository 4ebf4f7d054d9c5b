"""Tiling and spline-blended untiling: an identity model gets its image back, at any size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_consumer.deepcell import _native
from redis_consumer.deepcell.tiling import (
    spline_window,
    tile_image,
    tile_input,
    untile,
    untile_canvas,
    window_2d,
)


@pytest.fixture(params=["C", "numpy"], autouse=True)
def path(request, monkeypatch):
    """Every test runs through the C blend (the install step built it) and the numpy cells."""
    assert _native.untile_kernels is not None, "redis_consumer.deepcell._untile_kernels is not built (pip install -e .)"
    if request.param == "numpy":
        monkeypatch.setattr(_native, "untile_kernels", None)
    return request.param


def _identity_round_trip(image, tile, pad_mode="constant"):
    tiles, info = tile_input(image, tile, pad_mode=pad_mode)
    return tiles, info, untile(tiles, info)


@pytest.mark.parametrize("shape", [(1, 256, 256, 1), (1, 257, 300, 1), (3, 301, 511, 2),
                                   (2, 500, 97, 1), (1, 97, 500, 3), (2, 1000, 1001, 1),
                                   (1, 64, 64, 1), (1, 37, 29, 2), (4, 100, 100, 1)])
@pytest.mark.parametrize("tile", [(256, 256), (64, 64), (96, 128), (33, 40), (16, 16)])
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_identity_model_gets_the_image_back(shape, tile, pad_mode):
    rng = np.random.default_rng(sum(shape) + sum(tile))
    image = (rng.random(shape, dtype=np.float32) * 100).astype(np.float32)
    tiles, info, back = _identity_round_trip(image, tile, pad_mode)
    assert back.dtype == image.dtype and back.shape == image.shape
    # float64 blending then a cast: equal to float32 rounding
    np.testing.assert_allclose(back, image, rtol=2e-7, atol=0)
    if not info.small:
        assert tiles.shape[1:3] == tile


def test_windows_sum_to_one_on_every_overlap():
    for tile in (32, 64, 96, 128, 256, 512):
        stride = min(int(np.ceil(0.75 * tile / 2) * 2), tile)
        k = tile - stride
        left = spline_window(tile, k, 0)
        right = spline_window(tile, 0, k)
        # the right end of one tile over the left start of the next
        np.testing.assert_allclose(right[stride:] + left[:k], 1.0, atol=1e-12)
        assert right[:stride].min() == 1.0 and 0 < left[:k].min() < left[:k].max() < 1
        # the toolbox's max-scaled window sums to a constant a little above one instead
        t_left = spline_window(tile, k, 0, exact=False)
        t_right = spline_window(tile, 0, k, exact=False)
        total = t_right[stride:] + t_left[:k]
        np.testing.assert_allclose(total, total[0], rtol=1e-12)
        assert 1 < total[0] < 1 + 1.0 / k ** 2
        np.testing.assert_allclose(t_left[:k], left[:k] * total[0])
        assert window_2d((tile, tile), (k, k), (k, k)).shape == (tile, tile, 1)


def test_toolbox_window_brightens_the_overlaps_by_its_constant():
    image = np.ones((1, 600, 500, 1), np.float32)
    tiles, info = tile_input(image, (256, 256))
    back = untile(tiles, info, exact=False)
    gain = (spline_window(256, 0, 64, exact=False)[192:] + spline_window(256, 64, 0, exact=False)[:64])[0]
    # pixels covered by one tile stay 1; by two tiles along one axis: gain; at crossings: gain^2
    values = np.unique(np.round(back, 6))
    np.testing.assert_allclose(values, np.unique(np.round(np.float32([1, gain, gain * gain]), 6)))


def test_tiles_follow_the_toolbox_layout():
    image = np.arange(1 * 600 * 400 * 1, dtype=np.float32).reshape(1, 600, 400, 1)
    tiles, info = tile_image(image, (256, 256), pad_mode="constant")
    assert info.stride == (192, 192)
    # x: ceil((600-256)/192 + 1) = 3 tiles, overlap 256 + 2*192 - 600 = 40 -> pad (20, 20)
    # y: ceil((400-256)/192 + 1) = 2 tiles, overlap 256 + 192 - 400 = 48 -> pad (24, 24)
    assert tiles.shape == (6, 256, 256, 1)
    assert info.pad_x == (20, 20) and info.pad_y == (24, 24)
    assert info.padded_shape == (1, 640, 448)
    assert info.x_spans[::2] == [(0, 256), (192, 448), (384, 640)]
    assert info.overlaps_x[::2] == [(0, 64), (64, 64), (64, 0)]
    assert info.overlaps_y[:2] == [(0, 64), (64, 0)]
    # odd overlap puts the extra pixel on the low side (ceil first)
    _, info = tile_image(np.zeros((1, 301, 256, 1)), (256, 256))
    assert info.pad_x == (74, 73) and info.pad_y == (0, 0)  # 256 + 192 - 301 = 147


def test_small_images_are_reflect_padded_with_the_abs_quirk():
    rng = np.random.default_rng(0)
    image = rng.random((2, 100, 300, 1), dtype=np.float32)
    tiles, info = tile_input(image, (256, 256), pad_mode="constant")
    # x is 156 short: 78/78; y is 44 *long* and still padded by 22/22 (application.py:177-183)
    assert info.small and info.pad_x == (78, 78) and info.pad_y == (22, 22)
    assert tiles.shape == (2, 256, 344, 1)
    np.testing.assert_array_equal(tiles, np.pad(image, ((0, 0), (78, 78), (22, 22), (0, 0)), "reflect"))
    np.testing.assert_array_equal(untile(tiles, info), image)
    # odd difference: the extra pixel goes on the high side
    _, info = tile_input(rng.random((1, 255, 256, 1), dtype=np.float32), (256, 256))
    assert info.pad_x == (0, 1) and info.pad_y == (0, 0)


def test_exactly_one_tile_is_pasted_unweighted():
    image = np.random.default_rng(1).random((2, 256, 256, 1), dtype=np.float32)
    tiles, info, back = _identity_round_trip(image, (256, 256))
    assert tiles.shape == (2, 256, 256, 1) and not info.small
    np.testing.assert_array_equal(back, image)


def test_multi_channel_heads_untile_per_channel():
    image = np.random.default_rng(2).random((2, 300, 270, 1), dtype=np.float32)
    tiles, info = tile_input(image, (128, 128))
    head = np.concatenate([tiles, 2 * tiles, -tiles], axis=-1)
    back = untile(head, info)
    np.testing.assert_allclose(back, np.concatenate([image, 2 * image, -image], -1), rtol=3e-7)



@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 3), x=st.integers(1, 260), y=st.integers(1, 260), channels=st.integers(1, 2),
       tile=st.sampled_from([(32, 32), (48, 64), (64, 64), (100, 100), (128, 96)]),
       pad_mode=st.sampled_from(["constant", "reflect"]))
def test_identity_round_trip_property(batch, x, y, channels, tile, pad_mode):
    image = np.random.default_rng(x * 1000 + y).random((batch, x, y, channels), dtype=np.float32) + 0.5
    tiles, info = tile_input(image, tile, pad_mode=pad_mode)
    back = untile(tiles, info)
    assert back.shape == image.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, image, rtol=2e-7, atol=0)


@pytest.mark.parametrize("shape,tile", [((1, 1024, 1024, 1), 256), ((2, 300, 517, 3), 128), ((1, 1000, 1001, 2), 256),
                                        ((1, 256, 700, 1), 256), ((3, 97, 130, 1), 64), ((1, 520, 520, 1), 512),
                                        ((1, 64, 64, 1), 32), ((1, 40, 300, 1), 32)])
@pytest.mark.parametrize("exact", [True, False])
def test_cell_untile_is_the_float64_canvas_bit_for_bit(shape, tile, exact):
    """untile (cells, no canvas) against untile_canvas (the reference), bytewise: -0.0 too."""
    from redis_consumer.deepcell.tiling import tile_image, untile, untile_canvas

    rng = np.random.default_rng(sum(shape) + tile)
    tiles, info = tile_image(rng.normal(size=shape).astype(np.float32), (tile, tile))
    tiles = tiles * np.float32(1.3) - np.float32(0.2)
    tiles[0, :3, :3] = -0.0
    tiles[-1] = np.where(tiles[-1] < 0, np.float32(-0.0), tiles[-1])
    for head in (tiles, tiles[..., :1], tiles.astype(np.float64)):
        want, got = untile_canvas(head, info, exact=exact), untile(head, info, exact=exact)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def _same_bytes(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


@pytest.mark.parametrize("shape,tile,ratio", [((1, 700, 650, 1), 256, 0.5), ((2, 333, 410, 2), 96, 0.6),
                                              ((1, 300, 300, 4), 64, 0.9), ((1, 129, 1000, 3), 128, 1.0),
                                              ((2, 100, 90, 1), 33, 0.75), ((1, 1024, 1024, 1), 256, 0.75)])
def test_untile_equals_the_canvas_over_ratios_channels_and_views(shape, tile, ratio):
    rng = np.random.default_rng(shape[1] * tile)
    image = rng.normal(size=shape).astype(np.float32)
    image[0, 0, 0], image[0, 0, 1] = np.inf, -np.inf  # non-finite values go through the same sums
    image[0, 5, 5] = np.nan
    tiles, info = tile_image(image, (tile, tile), stride_ratio=ratio)
    wide = np.concatenate([tiles, tiles * np.float32(-3)], axis=-1)  # channel views of a wider head
    for head in (tiles, wide[..., shape[-1]:], wide[..., ::2], tiles.astype(np.float64),
                 np.asfortranarray(tiles)):
        for exact in (True, False):
            _same_bytes(untile(head, info, exact=exact), untile_canvas(head, info, exact=exact))


def test_tiles_with_their_own_overlaps_untile_as_the_canvas():
    """A Tiling whose per-tile overlaps are not its grid row's and column's (not one tile_image
    makes) still untiles as the canvas does: each tile gets its own window."""
    tiles, info = tile_image(np.random.default_rng(3).random((1, 300, 300, 1), dtype=np.float32), (128, 128))
    info.overlaps_x[4] = (10, 20)
    _same_bytes(untile(tiles, info), untile_canvas(tiles, info))


def test_float16_tiles_untile_as_the_canvas():
    tiles, info = tile_image(np.random.default_rng(4).random((1, 200, 210, 1), dtype=np.float32), (64, 64))
    head = tiles.astype(np.float16)
    _same_bytes(untile(head, info), untile_canvas(head, info))
