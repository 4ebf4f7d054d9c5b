"""Mesmer's percentile threshold by the C radix selection (`_percentile_kernels`) against numpy:
np.percentile of the non-zero pixels and the toolbox's clip, bit for bit, through the C path
and the numpy fallback, with ties, zeros of both signs, infinities, NaN, denormals, tiny and
strided planes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_consumer.deepcell import _native, _percentile_kernels, preprocess
from redis_consumer.deepcell.preprocess import (
    histogram_normalization,
    mesmer_preprocess,
    percentile_threshold,
)
from redis_consumer.utils import quantiles

SPECIAL = [0.0, -0.0, np.inf, -np.inf, 1.0, -1.0, 3.0, 1e-45, -1e-45, 5e-324, 3.4e38, -3.4e38, 1e300, 7.0]


def toolbox_threshold(image: np.ndarray, percentile: float) -> np.ndarray:
    """deepcell-toolbox 0.12 `percentile_threshold` (processing.py:104-132), as written there."""
    out = np.zeros(image.shape, dtype=image.dtype)
    for b in range(image.shape[0]):
        for c in range(image.shape[-1]):
            plane = np.copy(image[b, ..., c])
            values = plane[np.nonzero(plane)]
            if len(values) > 0:
                ceiling = np.percentile(values, percentile)
                plane[plane > ceiling] = ceiling
                out[b, ..., c] = plane
    return out


def _same_bytes(got: np.ndarray, expected: np.ndarray) -> bool:
    return got.dtype == expected.dtype and got.shape == expected.shape and got.tobytes() == expected.tobytes()


@pytest.fixture(params=["C", "numpy"])
def path(request, monkeypatch):
    """Through the C kernels (built by the install step) and through the numpy fallback."""
    assert _native.percentile_kernels is not None, "redis_consumer.deepcell._percentile_kernels is not built"
    if request.param == "numpy":
        monkeypatch.setattr(_native, "percentile_kernels", None)
    return request.param


def _expected_stats(plane: np.ndarray, q: float):
    values = plane[plane != 0]
    with np.errstate(invalid="ignore", over="ignore"):
        return values.size, (np.percentile(values, q) if values.size else None)


@st.composite
def planes(draw, max_side: int = 24):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    kind = draw(st.sampled_from(["ties", "special", "normal", "wide"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    with np.errstate(over="ignore"):  # float64 specials overflow to float32 infinities on purpose
        values = _values(rng, dtype, shape, kind, draw(st.integers(0, 1)))
    view = draw(st.sampled_from(["plain", "transposed", "stepped"]))
    if view == "transposed":
        values = values.T
    elif view == "stepped":
        values = np.repeat(np.repeat(values, 2, axis=0), 3, axis=1)[::2, ::3]
    return values


def _values(rng, dtype, shape, kind: str, nans: int) -> np.ndarray:
    if kind == "ties":
        values = rng.integers(-2, 6, shape).astype(dtype)
    elif kind == "special":
        values = rng.choice(np.array(SPECIAL + [np.nan] * nans), shape).astype(dtype)
    elif kind == "normal":
        values = rng.normal(400, 40, shape).astype(dtype)
    else:
        values = (rng.lognormal(0, 30, shape) * rng.choice([-1, 1], shape)).astype(dtype)
    return values


QS = st.one_of(st.sampled_from([99.9, 0.0, 100.0, 50.0, 0.01, 99.99]), st.floats(0, 100), st.integers(0, 100))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plane=planes(), q=QS)
def test_order_stats_give_np_percentile_of_the_nonzero_pixels(plane, q):
    n, nans, a, b, lo, hi = _percentile_kernels.order_stats(plane, float(np.true_divide(q, 100)), True)
    count, expected = _expected_stats(plane, q)
    assert n == count
    values = plane[plane != 0]
    assert nans == np.isnan(values).sum()
    if nans or not n:
        return
    dtype = plane.dtype.type
    with np.errstate(invalid="ignore", over="ignore"):
        got = quantiles.interpolate(n, q, dtype(a), dtype(b), dtype)
    assert _same_bytes(np.asarray(got), np.asarray(expected)), (got, expected)
    assert (lo, hi) == (plane.min(), plane.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", [5.0, -2.5, 1e-45, np.inf])
def test_one_value_everywhere_goes_through_every_digit(dtype, fill):
    plane = np.full((300, 301), fill, dtype=dtype)
    plane[7, 9] = 0  # left out
    for q in (0.0, 99.9, 100.0):
        n, nans, a, b, lo, hi = _percentile_kernels.order_stats(plane, q / 100, True)
        assert (n, nans, a, b) == (plane.size - 1, 0, dtype(fill), dtype(fill))
        assert (lo, hi) == (min(0.0, dtype(fill)), max(0.0, dtype(fill)))


def test_all_values_counted_without_skipping_zeros():
    plane = np.array([[0.0, 3.0, -0.0, 1.0]], dtype=np.float32)
    n, nans, a, b, _, _ = _percentile_kernels.order_stats(plane, 0.5, False)
    assert (n, nans) == (4, 0) and a == 0 and b == 1.0
    assert _percentile_kernels.order_stats(np.zeros((0, 3), np.float32), 0.5, True)[:2] == (0, 0)


def test_megapixel_channels_of_a_two_channel_image():
    rng = np.random.default_rng(3)
    image = rng.gamma(2.0, 300.0, (1, 1024, 1024, 2)).astype(np.float32).round()
    image[0, :40, :, 1] = 0
    image[0, 500:520, 500:520, 0] += 60000
    for c in (0, 1):
        plane = image[0, ..., c]
        n, _, a, b, _, _ = _percentile_kernels.order_stats(plane, 0.999, True)
        got = quantiles.interpolate(n, 99.9, np.float32(a), np.float32(b), np.float32)
        assert _same_bytes(np.asarray(got), np.asarray(np.percentile(plane[plane != 0], 99.9)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(plane=planes(), q=QS)
def test_percentile_threshold_is_the_toolbox_bit_for_bit(path, plane, q):
    image = np.stack([plane, -plane], axis=-1)[None]  # a channel of (B, X, Y, C) is strided
    with np.errstate(invalid="ignore", over="ignore"):
        expected = toolbox_threshold(image, q)
        got = percentile_threshold(image, q)
    assert _same_bytes(got, expected)


@pytest.mark.filterwarnings("ignore:One or more intensity levels are NaN")  # the toolbox's own, on NaN planes
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(plane=planes(max_side=40), q=st.sampled_from([99.9, 50.0, 100.0, 0.0]))
def test_mesmer_preprocess_is_the_toolbox_threshold_then_clahe(path, plane, q):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        image = np.stack([plane, plane[::-1] * 3], axis=-1)[None].astype(np.float32)
        expected = histogram_normalization(toolbox_threshold(image, q), kernel_size=16)
        got = mesmer_preprocess(image, percentile=q, kernel_size=16)
    assert _same_bytes(got, expected)


def test_mesmer_preprocess_on_a_bench_like_image_both_paths(monkeypatch):
    rng = np.random.default_rng(5)
    image = rng.normal(400, 40, (1, 512, 512, 2)).astype(np.float32).round()
    image[0, 100:200, 100:200] += 3000
    image[0, :3, :, 0] = 0
    image[0, 5, :7, 1] = -0.0
    expected = histogram_normalization(toolbox_threshold(image, 99.9), kernel_size=128)
    got = mesmer_preprocess(image)
    assert _same_bytes(got, expected)
    monkeypatch.setattr(_native, "percentile_kernels", None)
    assert _same_bytes(mesmer_preprocess(image), expected)


def test_unit_uint16_c_pass_equals_the_numpy_steps(monkeypatch):
    rng = np.random.default_rng(6)
    plane = (rng.gamma(2.0, 300.0, (130, 70)) * rng.choice([-1, 1], (130, 70))).astype(np.float32)
    plane[0, :4] = [0.0, -0.0, 1e-45, -1e-45]
    got = preprocess._unit_uint16(plane[:, ::2])
    monkeypatch.setattr(_native, "percentile_kernels", None)
    assert _same_bytes(got, preprocess._unit_uint16(plane[:, ::2]))


def test_kernels_refuse_what_does_not_fit():
    k = _percentile_kernels
    with pytest.raises(ValueError, match="float32/float64"):
        k.order_stats(np.zeros((2, 2, 2), np.float32), 0.5, True)
    with pytest.raises(ValueError, match="float32/float64"):
        k.order_stats(np.zeros((2, 2), np.int32), 0.5, True)
    with pytest.raises(ValueError, match="fraction"):
        k.order_stats(np.zeros((2, 2), np.float32), 1.5, True)
    with pytest.raises(ValueError, match="fraction"):
        k.order_stats(np.zeros((2, 2), np.float32), float("nan"), True)
    plane, out = np.ones((4, 5), np.float32), np.empty((4, 5), np.uint16)
    k.clip_unit_u16(plane * 3, 2.0, 0.0, 4.0, out)
    assert (out == 32768).all()  # rint(2 / 4 * 65535) = 32768 (half to even)
    with pytest.raises(ValueError, match="shape"):
        k.clip_unit_u16(plane, 2.0, 0.0, 4.0, out[:, :4])
    with pytest.raises(ValueError, match="format"):
        k.clip_unit_u16(plane, 2.0, 0.0, 4.0, out.astype(np.int32))
    with pytest.raises(ValueError, match="format"):
        k.clip_unit_u16(plane.astype(np.float64), 2.0, 0.0, 4.0, out)
    out.setflags(write=False)
    with pytest.raises((BufferError, ValueError)):
        k.clip_unit_u16(plane, 2.0, 0.0, 4.0, out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reversed_and_unaligned_views_read_the_same_values(dtype):
    rng = np.random.default_rng(8)
    plane = rng.normal(400, 40, (37, 29)).astype(dtype).round()
    plane[3, :5] = 0
    raw = bytearray(plane.nbytes + 1)
    unaligned = np.frombuffer(raw, dtype=dtype, count=plane.size, offset=1).reshape(plane.shape)
    unaligned[...] = plane
    assert not unaligned.flags.aligned
    expected = _percentile_kernels.order_stats(np.ascontiguousarray(plane), 0.999, True)
    for view in (plane[::-1, ::-1], unaligned, unaligned[::-1, ::2], plane[:, ::-3]):
        n, nans, a, b, lo, hi = _percentile_kernels.order_stats(view, 0.999, True)
        count, ceiling = _expected_stats(view, 99.9)
        assert (n, nans) == (count, 0) and (lo, hi) == (view.min(), view.max())
        got = quantiles.interpolate(n, 99.9, dtype(a), dtype(b), dtype)
        assert _same_bytes(np.asarray(got), np.asarray(ceiling))
    assert _percentile_kernels.order_stats(unaligned, 0.999, True) == expected
    if dtype is np.float32:
        out = np.empty(plane.shape, np.uint16)
        _percentile_kernels.clip_unit_u16(np.ascontiguousarray(plane), 450.0, 0.0, 450.0, out)
        for view, target in ((unaligned, np.empty(plane.shape, np.uint16)),
                             (plane[::-1, ::-1], np.empty(plane.shape, np.uint16)[::-1, ::-1])):
            _percentile_kernels.clip_unit_u16(view, 450.0, 0.0, 450.0, target)
            assert np.array_equal(target, out[::-1, ::-1] if view.strides[0] < 0 else out)
        raw16 = bytearray(out.nbytes + 1)
        odd = np.frombuffer(raw16, dtype=np.uint16, count=out.size, offset=1).reshape(out.shape)
        _percentile_kernels.clip_unit_u16(plane, 450.0, 0.0, 450.0, odd)
        assert np.array_equal(odd, out)


@pytest.mark.filterwarnings("ignore:One or more intensity levels are NaN")  # the toolbox's own, on the NaN
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # plane (skimage's img_as_uint)
def test_mesmer_planes_mixing_paths_and_without_the_clahe_kernels(monkeypatch):
    """A NaN channel beside a C one (each written alone), and the C threshold with numpy CLAHE
    lookups: still the toolbox's bytes."""
    rng = np.random.default_rng(9)
    image = rng.normal(400, 40, (2, 70, 90, 2)).astype(np.float32).round()
    image[0, 3, 4, 1] = np.nan
    image[1, :10, :, 0] = 0
    with np.errstate(invalid="ignore"):
        expected = histogram_normalization(toolbox_threshold(image, 99.9), kernel_size=32)
    assert _same_bytes(mesmer_preprocess(image, kernel_size=32), expected)
    monkeypatch.setattr(_native, "clahe_kernels", None)
    assert _same_bytes(mesmer_preprocess(image, kernel_size=32), expected)


def test_lookup2_checks_shapes_and_indices():
    from redis_consumer.deepcell import _clahe_kernels

    grey = np.array([[0, 1], [2, 1]], np.uint16)
    table = np.array([0.5, 1.5, 2.5], np.float32)
    out = np.zeros((2, 2, 2), np.float32)
    _clahe_kernels.lookup2(grey, table, grey[::-1].copy(), table * 2, out)
    assert out[..., 0].tolist() == [[0.5, 1.5], [2.5, 1.5]] and out[..., 1].tolist() == [[5.0, 3.0], [1.0, 3.0]]
    wide = np.zeros((2, 4, 4), np.float32)[:, ::2, 1:3]  # strided channels
    _clahe_kernels.lookup2(grey, table, grey, table, wide)
    assert wide[..., 1].tolist() == out[..., 0].tolist()
    with pytest.raises(ValueError, match="out of range"):
        _clahe_kernels.lookup2(grey, table[:2], grey, table, out)
    with pytest.raises(ValueError, match="match"):
        _clahe_kernels.lookup2(grey, table, grey, table, np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="format"):
        _clahe_kernels.lookup2(grey, table, grey, table, out.astype(np.float64))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 60), w=st.integers(1, 60), seed=st.integers(0, 2**31 - 1), step=st.sampled_from([1, 2, -1]),
       clip=st.booleans())
def test_unit_bins_are_clahe_bins_of_the_uint16_conversion(h, w, seed, step, clip):
    """`_unit_bins` (one C pass, float plane -> bin) gives `clahe._bins` of `_unit_uint16`'s
    image, for strided and reversed planes, with and without a ceiling."""
    from redis_consumer.deepcell import clahe

    rng = np.random.default_rng(seed)
    plane = (rng.gamma(2.0, 300.0, (h, 2 * w)) * rng.choice([-1, 1], (h, 2 * w))).astype(np.float32)[:, ::step][:, :w]
    ceiling = np.float32(np.percentile(plane, 90)) if clip else None
    lo, hi = float(plane.min()), float(plane.max())
    if ceiling is not None:
        lo, hi = min(lo, float(ceiling)), min(hi, float(ceiling))
    if not hi > lo:
        assert preprocess._unit_bins(plane, (lo, hi), ceiling) is None
        return
    got = preprocess._unit_bins(plane, (lo, hi), ceiling)
    expected = clahe._bins(preprocess._unit_uint16(plane, (lo, hi), ceiling), 256)
    assert got is not None and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_histogram_normalization_and_mesmer_without_the_fused_bins(monkeypatch):
    """The uint16 path (where `_unit_bins` does not apply) gives the same bytes as the fused one."""
    rng = np.random.default_rng(12)
    image = rng.normal(400, 40, (1, 300, 260, 2)).astype(np.float32).round()
    image[0, 50:120, 40:200] += 3000
    fused = mesmer_preprocess(image), histogram_normalization(image[..., :1])
    monkeypatch.setattr(preprocess, "_unit_bins", lambda *args, **kwargs: None)
    assert _same_bytes(mesmer_preprocess(image), fused[0])
    assert _same_bytes(histogram_normalization(image[..., :1]), fused[1])


def test_clip_unit_bins_refuses_what_does_not_fit():
    k = _percentile_kernels
    plane, out = np.ones((4, 5), np.float32), np.empty((4, 5), np.uint8)
    table = np.arange(65536, dtype=np.uint32).astype(np.uint8)
    assert k.clip_unit_bins(plane * 3, 2.0, 0.0, 4.0, table, out) == (32768, 32768)
    assert (out == 32768 % 256).all()
    with pytest.raises(ValueError, match="do not match"):
        k.clip_unit_bins(plane, 2.0, 0.0, 4.0, table[:65535], out)
    with pytest.raises(ValueError, match="do not match"):
        k.clip_unit_bins(plane, 2.0, 0.0, 4.0, table, out[:, :4].copy())
    with pytest.raises(ValueError, match="format"):
        k.clip_unit_bins(plane, 2.0, 0.0, 4.0, table, out.astype(np.uint16))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 70), seed=st.integers(0, 2**31 - 1), step=st.sampled_from([1, 2, 3, -1]),
       odd=st.booleans())
def test_clip_unit_bins_reads_uint16_as_its_float32_cast(h, w, seed, step, odd):
    """A uint16 plane (contiguous, strided, reversed, unaligned) gives the bins and range of its
    float32 cast, without the cast."""
    rng = np.random.default_rng(seed)
    raw = np.zeros(h * 3 * w * 2 + 2, np.uint8)
    wide = np.ndarray((h, 3 * w), np.uint16, raw.data, int(odd))  # odd: an unaligned buffer
    wide[...] = rng.integers(0, 65536, (h, 3 * w)).astype(np.uint16)
    plane = wide[:, ::step][:, :w]
    lo, hi = float(plane.min()), float(plane.max())
    table = np.random.default_rng(1).integers(0, 256, 65536).astype(np.uint8)
    got, want = np.empty(plane.shape, np.uint8), np.empty(plane.shape, np.uint8)
    scale = float(np.float32(hi - lo)) if hi > lo else 1.0
    span = _percentile_kernels.clip_unit_bins(plane, np.inf, lo, scale, table, got)
    assert span == _percentile_kernels.clip_unit_bins(plane.astype(np.float32), np.inf, lo, scale, table, want)
    np.testing.assert_array_equal(got, want)


def test_histogram_normalization_of_uint16_is_that_of_its_float32_cast(monkeypatch):
    """One uint16 channel (contiguous, or a channel of a wider image) goes uncast through the C
    pass with the bytes of its float32 cast; without the kernels it is cast first."""
    rng = np.random.default_rng(21)
    image = rng.normal(400, 40, (2, 300, 260, 2)).clip(0, 65535).astype(np.uint16)
    image[0, 50:120, 40:200] += 3000
    image[1, ..., 1] = 9  # a constant plane
    for view in (image[..., :1], image[..., 1:], np.ascontiguousarray(image[..., :1])):
        want = histogram_normalization(view.astype(np.float32))
        assert _same_bytes(histogram_normalization(view), want)
        with monkeypatch.context() as patch:
            patch.setattr(_native, "percentile_kernels", None)
            assert _same_bytes(histogram_normalization(view), want)
        with monkeypatch.context() as patch:
            patch.setattr(preprocess, "_unit_bins", lambda *args, **kwargs: None)
            assert _same_bytes(histogram_normalization(view), want)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 60), seed=st.integers(0, 2**31 - 1), step=st.sampled_from([1, 2, -1]),
       top=st.sampled_from([1, 3, 300, 65536]), zeros=st.floats(0, 1), q=st.sampled_from([0.0, 50.0, 99.9, 100.0]),
       odd=st.booleans())
def test_order_stats_u16_is_order_stats_of_the_float32_cast(h, w, seed, step, top, zeros, q, odd):
    """The uint16 histogram selection gives order_stats' answer for the plane's float32 cast,
    counting every value or the non-zero ones, for strided, reversed and unaligned planes."""
    rng = np.random.default_rng(seed)
    raw = np.zeros(h * 2 * w * 2 + 2, np.uint8)
    wide = np.ndarray((h, 2 * w), np.uint16, raw.data, int(odd))
    wide[...] = rng.integers(0, top, (h, 2 * w)).astype(np.uint16) * (rng.random((h, 2 * w)) >= zeros)
    plane = wide[:, ::step][:, :w]
    for skip in (True, False):
        got = _percentile_kernels.order_stats_u16(plane, q / 100, skip)
        want = _percentile_kernels.order_stats(plane.astype(np.float32), q / 100, skip)
        assert got[:2] == want[:2]
        np.testing.assert_array_equal(np.array(got[2:]), np.array(want[2:]))  # NaN a, b for n == 0 too


def test_mesmer_preprocess_of_uint16_is_that_of_its_float32_cast(monkeypatch):
    """A uint16 (B, X, Y, 2) image (an empty channel, a constant one among them) gives the bytes
    of its float32 cast on every path: C parts, without the kernels, without the fused bins."""
    rng = np.random.default_rng(31)
    image = rng.normal(400, 40, (3, 200, 170, 2)).clip(0, 65535).astype(np.uint16)
    image[0, 40:90, 30:150, 0] += 3000
    image[1, ..., 1] = 0
    image[2, ..., 0] = 77
    want = mesmer_preprocess(image.astype(np.float32))
    assert _same_bytes(mesmer_preprocess(image), want)
    assert _same_bytes(mesmer_preprocess(np.ascontiguousarray(image[..., ::-1])),
                       mesmer_preprocess(image[..., ::-1].astype(np.float32)))
    for module, name, value in ((_native, "percentile_kernels", None), (_native, "clahe_kernels", None),
                                (preprocess, "_unit_bins", lambda *a, **k: None)):
        with monkeypatch.context() as patch:
            patch.setattr(module, name, value)
            assert _same_bytes(mesmer_preprocess(image), want), name
