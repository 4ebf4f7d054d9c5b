"""The fast CLAHE against scikit-image's equalize_adapthist (the reference the DeepCell apps run)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.exposure import equalize_adapthist, rescale_intensity

from redis_consumer.deepcell import _native, clahe
from redis_consumer.deepcell.clahe import equalize_adapthist_fast
from tests.deepcell_synthetic import touching_nuclei


@pytest.fixture(params=["C", "numpy"], autouse=True)
def path(request, monkeypatch):
    """Every test runs through the C kernels (the install step built them) and through the
    numpy fallback a source tree without the extension uses: both must be skimage's."""
    assert _native.clahe_kernels is not None, "redis_consumer.deepcell._clahe_kernels is not built (pip install -e .)"
    if request.param == "numpy":
        monkeypatch.setattr(_native, "clahe_kernels", None)
    return request.param


def _assert_same(plane: np.ndarray, **kwargs) -> None:
    expected = equalize_adapthist(plane, **kwargs)
    got = equalize_adapthist_fast(plane, **kwargs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def _scaled(image: np.ndarray) -> np.ndarray:
    return rescale_intensity(image.astype(np.float32), out_range=(0.0, 1.0))


@pytest.mark.parametrize("shape,kernel_size", [
    ((512, 512), None), ((512, 512), 128), ((90, 70), None), ((90, 70), 16), ((90, 70), 128),
    ((333, 517), None), ((200, 300), (17, 33)), ((1000, 37), None), ((7, 5), None), ((2, 2), None),
    ((1, 1), None), ((64, 64), 1), ((129, 257), 64),
])
def test_identical_to_skimage_on_random_images(shape, kernel_size):
    rng = np.random.default_rng(hash(shape) % 2**32)
    for image in (rng.gamma(2.0, 300.0, shape), rng.normal(400, 40, shape), rng.integers(0, 4, shape)):
        _assert_same(_scaled(image), kernel_size=kernel_size)


def test_identical_on_synthetic_nuclei_float64_and_uint16():
    labels = touching_nuclei()[0]
    noise = np.random.default_rng(5).normal(300, 30, labels.shape)
    image = np.clip(noise + 2500 * (labels > 0) + 40 * (labels % 7), 0, None)  # nuclei on a noisy ground
    _assert_same(_scaled(image))
    _assert_same(rescale_intensity(image.astype(np.float64), out_range=(0.0, 1.0)))
    _assert_same((image.astype(np.float64) / image.max() * 65535).astype(np.uint16), kernel_size=24)


@pytest.mark.parametrize("clip_limit,nbins", [(0.0, 256), (0.05, 128), (0.001, 64), (1.0, 256), (0.01, 512),
                                              (0.02, 3000)])
def test_identical_for_other_clip_limits_and_bins(clip_limit, nbins):
    image = np.random.default_rng(3).gamma(1.5, 500.0, (150, 190))
    image[40:90, 60:120] += 5000  # a bright block: histograms that clip hard
    _assert_same(_scaled(image), clip_limit=clip_limit, nbins=nbins)


def test_band_and_weight_fallbacks_are_identical(monkeypatch):
    image = _scaled(np.random.default_rng(4).gamma(2.0, 300.0, (301, 203)))
    expected = equalize_adapthist(image, kernel_size=40)
    monkeypatch.setattr(clahe, "_BAND_PIXELS", 500)  # bands of 2 rows, many per block
    monkeypatch.setattr(clahe, "_WEIGHT_CACHE_BYTES", 0)  # weights computed per band
    np.testing.assert_array_equal(equalize_adapthist_fast(image, kernel_size=40), expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 80), w=st.integers(1, 80), k=st.one_of(st.none(), st.integers(1, 40)),
       seed=st.integers(0, 2**31 - 1))
def test_identical_on_arbitrary_sizes(h, w, k, seed):
    image = np.random.default_rng(seed).gamma(2.0, 300.0, (h, w))
    if np.ptp(image) == 0:
        return
    _assert_same(_scaled(image), kernel_size=k)


def test_rejects_non_2d():
    with pytest.raises(ValueError):
        equalize_adapthist_fast(np.zeros((4, 4, 2), np.float32))


def test_unit_uint16_is_img_as_uint_of_the_rescale():
    from skimage.util import img_as_uint

    from redis_consumer.deepcell.preprocess import _unit_uint16

    rng = np.random.default_rng(8)
    for image in (rng.gamma(2.0, 300.0, (120, 77)), rng.normal(0, 1, (50, 50)), rng.random((40, 60)) * 1e-30,
                  rng.normal(1e6, 1, (64, 64)), -rng.gamma(1.0, 1e4, (33, 17)), rng.integers(0, 3, (20, 20))):
        plane = image.astype(np.float32)
        expected = img_as_uint(rescale_intensity(plane, out_range=(0.0, 1.0)))
        np.testing.assert_array_equal(_unit_uint16(plane), expected)
        np.testing.assert_array_equal(_unit_uint16(np.asfortranarray(plane)), expected)
        _assert_same(expected)  # and CLAHE of that uint16 is skimage's too


def test_out_receives_the_same_result_contiguous_or_strided():
    image = _scaled(np.random.default_rng(6).gamma(2.0, 300.0, (97, 131)))
    expected = equalize_adapthist(image, kernel_size=24)
    flat = np.full(image.shape, np.nan, np.float32)
    assert equalize_adapthist_fast(image, kernel_size=24, out=flat) is flat
    np.testing.assert_array_equal(flat, expected)
    stack = np.full(image.shape + (2,), np.nan, np.float32)
    equalize_adapthist_fast(image, kernel_size=24, out=stack[..., 1])
    np.testing.assert_array_equal(stack[..., 1], expected)
    assert np.isnan(stack[..., 0]).all()


@pytest.mark.parametrize("clip_limit", [1, 7, 163, 1000, 10_000])
def test_clip_histograms_is_skimage_clip_histogram_per_row(clip_limit):
    from skimage.exposure._adapthist import clip_histogram

    rng = np.random.default_rng(clip_limit)
    hist = np.concatenate([rng.poisson(rng.uniform(1, 400), (40, 256)),  # smooth rows
                           rng.integers(0, 3, (10, 256)) * rng.integers(0, 3000, (10, 256)),  # spiky
                           np.zeros((2, 256), np.int64), np.full((2, 256), 5000)]).astype(np.int64)
    expected = np.array([clip_histogram(row.copy(), clip_limit) for row in hist])
    got = clahe.clip_histograms(hist.copy(), clip_limit)
    np.testing.assert_array_equal(got, expected)


def test_clip_histograms_on_random_bins_and_limits_including_second_passes(monkeypatch, path):
    from skimage.exposure._adapthist import clip_histogram

    second_passes = []
    spread = clahe._spread_remainder
    monkeypatch.setattr(clahe, "_spread_remainder", lambda *a: (second_passes.append(1), spread(*a)))
    rng = np.random.default_rng(0)
    for _ in range(150):
        nbins = int(rng.choice([8, 16, 64, 256]))
        hist = (rng.integers(0, 3, (20, nbins)) * rng.integers(0, int(rng.choice([10, 100, 3000])), (20, nbins)))
        hist[:5] = rng.poisson(rng.uniform(0.5, 50), (5, nbins))
        limit = int(rng.integers(1, 200))
        expected = np.array([clip_histogram(row.copy(), limit) for row in hist.astype(np.int64)])
        np.testing.assert_array_equal(clahe.clip_histograms(hist.astype(np.int64), limit), expected)
    # rows that needed skimage's second round were among them (the numpy path shows it; the C
    # loop does the same passes in one function)
    assert bool(second_passes) == (path == "numpy")
