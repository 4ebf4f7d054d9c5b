"""The C kernels: built by the install step, and refusing arrays that do not fit instead of
reading or writing past them (the numpy paths they replace are compared in the CLAHE and
tiling tests)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def test_the_install_step_built_the_extensions():
    from redis_consumer.deepcell import _native

    clahe = importlib.import_module("redis_consumer.deepcell._clahe_kernels")
    untile = importlib.import_module("redis_consumer.deepcell._untile_kernels")
    percentile = importlib.import_module("redis_consumer.deepcell._percentile_kernels")
    overlay = importlib.import_module("redis_consumer.deepcell._overlay_kernels")
    assert _native.clahe_kernels is clahe and _native.untile_kernels is untile
    assert _native.percentile_kernels is percentile and {"order_stats", "clip_unit_u16"} <= set(dir(percentile))
    assert {"clahe_map", "lookup", "lookup2", "gather_u8", "region_hist", "clip_histograms"} <= set(dir(clahe))
    assert "untile_blend" in dir(untile)
    assert _native.overlay_kernels is overlay and "mark_outlines" in dir(overlay)


@pytest.fixture
def k():
    """Both extensions' functions under one name."""
    from types import SimpleNamespace

    from redis_consumer.deepcell import _clahe_kernels, _untile_kernels

    return SimpleNamespace(**{name: getattr(module, name) for module in (_clahe_kernels, _untile_kernels)
                              for name in dir(module) if not name.startswith("_")})


def test_clahe_map_rejects_maps_too_small_bins_out_of_range_and_wrong_dtypes(k):
    bins = np.zeros((64, 64), np.uint8)
    out = np.empty((64, 64), np.uint16)
    maps = np.zeros((10, 10, 4), np.float64)
    assert k.clahe_map(bins, maps, 8, 8, out) == (0, 0)
    with pytest.raises(ValueError, match="kernel"):
        k.clahe_map(bins, np.zeros((3, 10, 4)), 8, 8, out)
    with pytest.raises(ValueError, match="out of range"):
        k.clahe_map(np.full((64, 64), 4, np.uint8), maps, 8, 8, out)
    with pytest.raises(ValueError, match="format"):
        k.clahe_map(bins.astype(np.int32), maps, 8, 8, out)
    with pytest.raises(ValueError, match="kernel"):
        k.clahe_map(bins, maps, 8, 8, np.empty((64, 63), np.uint16))
    with pytest.raises(ValueError, match="kernel"):
        k.clahe_map(bins, maps, 0, 8, out)
    out.setflags(write=False)
    with pytest.raises((BufferError, ValueError)):  # a read-only out is never written
        k.clahe_map(bins, maps, 8, 8, out)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 90), w=st.integers(1, 90), k0=st.integers(1, 40), k1=st.integers(1, 40),
       nbins=st.sampled_from([1, 3, 256, 300]), seed=st.integers(0, 2**31 - 1), fractional=st.booleans())
def test_clahe_map_vector_and_scalar_loops_agree(h, w, k0, k1, nbins, seed, fractional):
    """The interleaved AVX2 loop (4 pixels a step, remainders scalar) and the scalar loop give
    the same grey levels and range, for uint8 and uint16 bins, integer maps (skimage's) and
    maps with fractions (every rounding of the products and sums exercised)."""
    from redis_consumer.deepcell import _clahe_kernels

    rng = np.random.default_rng(seed)
    m0, m1 = (h - 1 + k0 // 2) // k0 + 2, (w - 1 + k1 // 2) // k1 + 2
    maps = rng.integers(0, 2**14, (m0, m1, nbins)).astype(np.float64)
    if fractional:
        maps += rng.random(maps.shape)
    for dtype in ((np.uint8, np.uint16) if nbins <= 256 else (np.uint16,)):
        bins = rng.integers(0, nbins, (h, w)).astype(dtype)
        fast, slow = np.empty((h, w), np.uint16), np.empty((h, w), np.uint16)
        assert _clahe_kernels.clahe_map(bins, maps, k0, k1, fast) == _clahe_kernels.clahe_map(
            bins, maps, k0, k1, slow, False)
        np.testing.assert_array_equal(fast, slow)


def test_lookup_and_gathers_check_indices_and_shapes(k):
    index = np.array([[0, 1], [2, 1]], np.uint16)
    out = np.zeros((2, 2, 2), np.float32)
    k.lookup(index, np.array([1.5, 2.5, 3.5], np.float32), out[..., 1])
    assert out[..., 1].tolist() == [[1.5, 2.5], [3.5, 2.5]] and not out[..., 0].any()
    with pytest.raises(ValueError, match="out of range"):
        k.lookup(index, np.array([1.0, 2.0], np.float32), out[..., 1])
    with pytest.raises(ValueError, match="match"):
        k.lookup(index, np.array([1.0, 2.0, 3.0]), out[..., 1])  # float64 table, float32 out
    bins = np.empty((2, 2), np.uint8)
    k.gather_u8(index, np.array([7, 8, 9], np.uint8), bins)
    assert bins.tolist() == [[7, 8], [9, 8]]
    with pytest.raises(ValueError, match="past the table"):
        k.gather_u8(index, np.array([7, 8], np.uint8), bins)
    hist = np.zeros((4, 3), np.int64)
    k.region_hist(np.array([[0, 1, 2, 2], [1, 1, 0, 2], [2, 2, 2, 2], [0, 0, 0, 1]], np.uint8), 2, 2, 1, 1, hist[:1])
    assert hist[0].tolist() == [1, 1, 2] and not hist[1:].any()  # the region at (1, 1), one pixel each side
    with pytest.raises(ValueError, match="fit"):
        k.region_hist(np.zeros((4, 4), np.uint8), 2, 2, 2, 2, hist)
    hist[...] = 0  # origin (0, 0): the four 2 x 2 regions of an unpadded image
    k.region_hist(np.array([[0, 1, 2, 2], [1, 1, 0, 2], [2, 2, 2, 2], [0, 0, 0, 1]], np.uint8), 2, 2, 2, 2, hist, 0, 0)
    assert hist.tolist() == [[1, 3, 0], [1, 0, 3], [2, 0, 2], [1, 1, 2]]
    with pytest.raises(ValueError, match="fit"):
        k.region_hist(np.zeros((4, 4), np.uint8), 2, 2, 2, 2, hist, 1, 0)


def test_untile_blend_rejects_grids_that_do_not_fit(k):
    tiles = np.ones((4, 8, 8, 1), np.float32)
    out = np.empty((1, 12, 12, 1), np.float32)
    starts = np.array([0, 4], np.int64)
    wx = np.ones((2, 8))
    k.untile_blend(tiles, out, starts, starts, wx, wx, 0, 0)
    assert out[0, :4, :4].max() == 1 and out[0, 4:8, 4:8].min() == 4  # four tiles of weight one overlap there
    with pytest.raises(ValueError, match="fit"):
        k.untile_blend(tiles[:3], out, starts, starts, wx, wx, 0, 0)
    with pytest.raises(ValueError, match="fit"):
        k.untile_blend(tiles, out.astype(np.float64), starts, starts, wx, wx, 0, 0)
    with pytest.raises(ValueError, match="fit"):
        k.untile_blend(tiles, out, starts, starts, np.ones((2, 7)), wx, 0, 0)
    with pytest.raises(ValueError, match="fit"):
        k.untile_blend(tiles, out, np.array([0, -1], np.int64), starts, wx, wx, 0, 0)


def test_a_tree_without_the_extension_logs_one_warning_and_uses_numpy():
    """Run from a source tree that was never built: one warning line, then the numpy paths
    (which the CLAHE and tiling tests check against skimage and the canvas)."""
    import subprocess
    import sys

    probe = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s %(message)s')\n"
        "sys.modules['redis_consumer.deepcell._clahe_kernels'] = None  # as if no .so were there\n"
        "sys.modules['redis_consumer.deepcell._untile_kernels'] = None\n"
        "sys.modules['redis_consumer.deepcell._percentile_kernels'] = None\n"
        "sys.modules['redis_consumer.deepcell._overlay_kernels'] = None\n"
        "import numpy as np\n"
        "from redis_consumer.deepcell import _native, clahe, tiling\n"
        "assert _native.clahe_kernels is None and _native.untile_kernels is None\n"
        "assert _native.percentile_kernels is None and _native.overlay_kernels is None\n"
        "print('grey', int(clahe.clahe_grey(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7).sum()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("WARNING redis_consumer.deepcell._native"), proc.stderr
    assert "not built" in lines[0] and "pip install -e ." in lines[0]
    from redis_consumer.deepcell import clahe

    expected = int(clahe.clahe_grey(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7).sum())
    assert proc.stdout.split() == ["grey", str(expected)]
