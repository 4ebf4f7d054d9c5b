"""`np.percentile` (method 'linear') of a float array by one single-kth partition, same value.

Why: `np.percentile` partitions at [0, -1, floor, floor + 1] of the virtual index (it also
finds the minimum and maximum); for Mesmer's 99.9th percentile of a megapixel channel that is
~4 ms where one `partition(k)` and a minimum over the 0.1 % above it take ~0.7 ms. The value is
numpy's own: the same virtual index `(n - 1) * q / 100`, its floor and fraction in float64, and
numpy's `_lerp` (a + (b - a) * t, or b - (b - a) * (1 - t) when t >= 0.5) in the array's dtype.
tests/test_quantiles.py checks equality with `np.percentile` on random, tied and tiny arrays.
Anything else (integer dtypes, NaN present, a q that is not a Python number) goes to
`np.percentile` itself.
"""

from __future__ import annotations

import numpy as np

__all__ = ["count_percentiles", "interpolate", "percentile", "percentiles"]


def percentile(values: np.ndarray, q: float, *, overwrite_input: bool = False) -> np.floating:
    """`np.percentile(values, q)` for a 1-D array; `overwrite_input=True` lets it reorder `values`."""
    arr = np.asarray(values)
    if (arr.ndim != 1 or arr.dtype not in (np.float32, np.float64) or type(q) not in (int, float)
            or not 0 <= q <= 100 or arr.size == 0):
        return np.percentile(arr, q, overwrite_input=overwrite_input)
    return _one(arr if overwrite_input else arr.copy(), q, arr.dtype.type)


def percentiles(values: np.ndarray, qs: tuple[float, ...], *, overwrite_input: bool = False) -> np.ndarray:
    """`np.percentile(values, qs)` for a 1-D array and a tuple of Python numbers: float64 values
    (numpy interpolates a sequence of q in float64), one partition per q."""
    arr = np.asarray(values)
    if (arr.ndim != 1 or arr.dtype not in (np.float32, np.float64) or not isinstance(qs, tuple) or not qs
            or any(type(q) not in (int, float) or not 0 <= q <= 100 for q in qs) or arr.size == 0):
        return np.percentile(arr, qs, overwrite_input=overwrite_input)
    work = arr if overwrite_input else arr.copy()
    return np.array([_one(work, q, np.float64) for q in qs])


def count_percentiles(values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """`np.percentile(values.astype(np.float32), qs)` for 1-D non-negative integers below 2**24
    (microscope counts: exact in float32), from a histogram instead of partitions: the order
    statistics numpy interpolates between are read off the cumulative counts (~0.1 ms for the
    overlay's 65536-value sample, where converting and partitioning it took ~0.8 ms)."""
    arr = np.asarray(values)
    if (arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.size == 0 or not isinstance(qs, tuple) or not qs
            or any(type(q) not in (int, float) or not 0 <= q <= 100 for q in qs)
            or int(arr.min()) < 0 or int(arr.max()) >= 1 << 24):
        return percentiles(np.asarray(arr, dtype=np.float32), qs)
    cumulative = np.cumsum(np.bincount(arr))  # cumulative[v]: how many values are <= v
    n = arr.size
    out = []
    for q in qs:
        virtual = (n - 1) * np.true_divide(q, 100)
        if virtual >= n - 1:
            out.append(np.float64(np.float32(cumulative.size - 1)))  # the maximum, as _one
            continue
        below = int(np.floor(virtual))
        a, b = np.searchsorted(cumulative, (below + 1, below + 2))  # the (below)th and next smallest
        out.append(_lerp(np.float32(a), np.float32(b), float(virtual - np.floor(virtual)), np.float64))
    return np.array(out)


def interpolate(n: int, q: float, a: np.floating, b: np.floating, result: type) -> np.floating:
    """numpy's 'linear' percentile q of n values from its two order statistics a and b (the
    floor of the virtual index `(n - 1) * q / 100` and the next; the maximum twice at the top),
    scalars of the values' dtype, interpolated in `result` as `_one` does (for a caller that
    selected a and b itself: the C selection in deepcell/preprocess.py)."""
    virtual = (n - 1) * np.true_divide(q, 100)
    t = float(virtual + 1) if virtual >= n - 1 else float(virtual - np.floor(virtual))
    return _lerp(a, b, t, result)


def _lerp(a: np.floating, b: np.floating, t: float, result: type) -> np.floating:
    """numpy's _lerp of two neighbouring order statistics, as `_one` applies it."""
    diff = b - a  # in the array's dtype, as numpy's _lerp takes it
    if result is np.float64:
        a, b, diff = np.float64(a), np.float64(b), np.float64(diff)
    if t >= 0.5:
        return result(b - diff * (1 - t))
    return result(a + diff * t)


def _one(work: np.ndarray, q: float, result: type) -> np.floating:
    """One percentile of `work` (reordered), interpolated as numpy does for a `result` dtype:
    the array's own for a scalar q, float64 (after a float32 difference) for a sequence."""
    n = work.size
    virtual = (n - 1) * np.true_divide(q, 100)  # numpy's 'linear' virtual index, float64
    if virtual >= n - 1:  # numpy interpolates the maximum with itself (index -1 twice)
        a = b = work.max()
        t = float(virtual + 1)
    else:
        below = int(np.floor(virtual))
        work.partition(below)
        a, b = work[below], work[below + 1:].min()
        t = float(virtual - np.floor(virtual))
    if np.isnan(a) or np.isnan(b):  # NaN sorts last; numpy answers NaN its own way
        return result(np.percentile(work, q))
    return _lerp(a, b, t, result)
