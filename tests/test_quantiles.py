"""utils.quantiles.percentile against np.percentile: the same value, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from redis_consumer.utils.quantiles import percentile


def _same(x, y) -> bool:
    return np.asarray(x).dtype == np.asarray(y).dtype and (
        np.array_equal(x, y) or (np.isnan(x) and np.isnan(y)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_numpy_on_random_arrays(dtype):
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(400):
        n = int(rng.integers(1, 3000))
        kind = trial % 4
        if kind == 0:
            values = rng.normal(0, 1, n)
        elif kind == 1:  # heavy ties, like integer camera counts
            values = rng.integers(0, 20, n).astype(float)
        elif kind == 2:  # a wide range
            values = rng.lognormal(0, 4, n)
        else:  # a few distinct values and one outlier
            values = np.where(rng.random(n) < 0.999, 3.0, 1e6) * rng.integers(1, 3, n)
        values = values.astype(dtype)
        for q in (99.9, 0.0, 100.0, 50.0, 1.0, float(rng.uniform(0, 100)), 37):
            expected = np.percentile(values, q)
            got = percentile(values.copy(), q, overwrite_input=True)
            assert _same(got, expected), (trial, n, q, got, expected)
            checked += 1
    assert checked == 400 * 7


def test_megapixel_mesmer_like_channel():
    rng = np.random.default_rng(1)
    values = (rng.gamma(2.0, 300, 1 << 20) + 1).astype(np.float32)
    assert _same(percentile(values.copy(), 99.9, overwrite_input=True), np.percentile(values, 99.9))


def test_leaves_input_alone_unless_allowed():
    values = np.arange(10, 0, -1, dtype=np.float32)
    before = values.copy()
    assert percentile(values, 75.0) == np.percentile(before, 75.0)
    assert np.array_equal(values, before)


@pytest.mark.parametrize("values", [
    np.array([1.0, np.nan, 3.0], dtype=np.float32),
    np.array([np.nan], dtype=np.float64),
    np.array([1.0, np.inf, 2.0], dtype=np.float32),
    np.array([np.inf], dtype=np.float32),
    np.array([-np.inf, 5.0, np.inf], dtype=np.float64),
    np.array([1, 5, 9], dtype=np.int64),
])
def test_special_values_and_other_dtypes_like_numpy(values):
    with np.errstate(invalid="ignore"):
        for q in (0.0, 40.0, 99.9, 100.0):
            assert _same(percentile(values.copy(), q), np.percentile(values, q)), q


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_percentiles_of_a_tuple_equal_numpy(dtype):
    from redis_consumer.utils.quantiles import percentiles

    rng = np.random.default_rng(2)
    for trial in range(300):
        n = int(rng.integers(1, 70000 if trial % 50 == 0 else 3000))
        values = (rng.gamma(2.0, 300.0, n) if trial % 2 else rng.integers(0, 30, n)).astype(dtype)
        qs = (1.0, 99.9) if trial % 3 else (float(rng.uniform(0, 100)), 0.0, 100, 50.0)
        expected = np.percentile(values, qs)
        got = percentiles(values, qs)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), (trial, qs, got, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint32])
def test_count_percentiles_equal_numpy_of_the_float32_values(dtype):
    from redis_consumer.utils.quantiles import count_percentiles

    rng = np.random.default_rng(3)
    top = min(np.iinfo(dtype).max, (1 << 24) - 1)
    for trial in range(300):
        n = int(rng.integers(1, 70000 if trial % 50 == 0 else 3000))
        if trial % 3 == 0:
            values = rng.integers(0, 30, n)  # heavy ties
        elif trial % 3 == 1:
            values = np.clip(rng.gamma(2.0, top / 40, n), 0, top)
        else:
            values = np.where(rng.random(n) < 0.01, top, rng.integers(0, 5, n))  # sparse bright pixels
        values = values.astype(dtype)
        qs = (1.0, 99.9) if trial % 3 else (float(rng.uniform(0, 100)), 0.0, 100, 50.0)
        expected = np.percentile(values.astype(np.float32), qs)
        got = count_percentiles(values, qs)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), (trial, qs, got, expected)


@pytest.mark.parametrize("values", [
    np.array([-3, 5, 9], dtype=np.int16), np.array([1 << 25, 7], dtype=np.int64), np.array([2.5, 1.0]),
    np.array([], dtype=np.uint16),
])
def test_count_percentiles_hand_the_rest_to_the_float32_path(values):
    from redis_consumer.utils.quantiles import count_percentiles

    if values.size == 0:
        with pytest.raises(IndexError):  # as np.percentile of an empty array
            np.percentile(values.astype(np.float32), (1.0, 99.9))
        with pytest.raises(IndexError):
            count_percentiles(values, (1.0, 99.9))
        return
    assert np.array_equal(count_percentiles(values, (1.0, 99.9)), np.percentile(values.astype(np.float32), (1.0, 99.9)))
