"""CLAHE with output identical to scikit-image's `equalize_adapthist`, at ~1/12 of its CPU.

Why: the DeepCell applications normalise every channel with `skimage.exposure.equalize_adapthist`
(deepcell-toolbox `deepcell_toolbox/processing.py:65-101`), and at ~100 ms per megapixel it was
the largest CPU cost of a segmentation or mesmer job outside the watershed. This module performs
the same arithmetic (skimage 0.26 `skimage/exposure/_adapthist.py`: 14-bit grey levels, `nbins`
bins of `1 + 2**14 // nbins` levels, per-region histograms clipped by skimage's own
`clip_histogram`/`map_histogram`, bilinear mapping accumulated in float32, truncation to the
integer grey level, final rescale) but:

- every per-pixel value-to-value step (float -> uint16 -> 14-bit grey -> bin, and the final
  grey -> [0, 1] rescale) is one lookup table built by running skimage's own function on the
  distinct values, so the image is walked once instead of five times;
- all region histograms come from one pass (`_clahe_kernels.region_hist`, or one `np.bincount`)
  instead of `apply_along_axis`, and are clipped together (`clip_histograms`);
- the bilinear mapping is computed only for the image (skimage also maps the reflect padding
  and crops it afterwards), with the same per-term float64 product, float32 rounding and
  summation order as skimage, so the result is bit-identical: in one C pass
  (`_clahe_kernels.clahe_map`, which also yields the grey range for the final rescale) or, where the
  extension is not built, in numpy one band of rows at a time so its float64 temporaries stay
  in cache. tests/test_deepcell_clahe.py asserts equality against `equalize_adapthist` on
  random, synthetic and odd-sized images, through both paths.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import numpy as np
from skimage.exposure import rescale_intensity
from skimage.exposure._adapthist import map_histogram
from skimage.util import img_as_uint

from redis_consumer.deepcell import _native

NR_OF_GRAY = 2**14  # skimage's grey levels inside CLAHE
_BAND_PIXELS = 1 << 16  # rows per band: ~64 K pixels, so the float64 temporaries fit in L2
_WEIGHT_CACHE_BYTES = 8 << 20  # keep the per-phase weights when they take at most this


def _bands(h: int, p0: int, k0: int, band: int):
    """(r0, r1) row ranges of at most `band` rows, none crossing a processing-block boundary."""
    r0 = 0
    while r0 < h:
        block_end = ((r0 + p0) // k0 + 1) * k0 - p0
        r1 = min(h, block_end, r0 + band)
        yield r0, r1
        r0 = r1


def _kernel(shape: tuple[int, int], kernel_size) -> tuple[int, int]:
    if kernel_size is None:
        return tuple(max(s // 8, 1) for s in shape)  # type: ignore[return-value]
    if isinstance(kernel_size, numbers.Number):
        return (int(kernel_size),) * 2  # type: ignore[return-value]
    if len(kernel_size) != 2:
        raise ValueError(f"Incorrect value of `kernel_size`: {kernel_size}")
    return tuple(int(k) for k in kernel_size)  # type: ignore[return-value]


def _bin_table(lo: int, hi: int, nbins: int) -> np.ndarray:
    """The bin skimage assigns each uint16 value 0..hi of an image whose values span lo..hi
    (rescale to 14 bits, round, // bin width); values below lo (absent) get 0."""
    levels = np.arange(lo, hi + 1, dtype=np.uint16)
    grey = np.round(rescale_intensity(levels, in_range=(float(lo), float(hi)),
                                      out_range=(0, NR_OF_GRAY - 1))).astype(np.uint16)
    bin_of = np.zeros(hi + 1, dtype=np.uint8 if nbins <= 256 else np.intp)
    bin_of[lo:] = grey // (1 + NR_OF_GRAY // nbins)
    return bin_of


@functools.cache
def full_range_bins(nbins: int) -> np.ndarray:
    """`_bin_table(0, 65535, nbins)`, read-only: the table for a uint16 image that spans the
    whole range, as `img_as_uint` of a rescaled [0, 1] plane does (its min maps to 0, its max
    to 65535), built once per process instead of once per plane."""
    table = _bin_table(0, 65535, nbins)
    table.setflags(write=False)
    return table


def _bins(image: np.ndarray, nbins: int) -> np.ndarray:
    """Per pixel: the histogram bin skimage assigns (img_as_uint, rescale to 14 bits, round, // bin)."""
    u16 = img_as_uint(image)
    lo, hi = int(u16.min()), int(u16.max())
    bin_of = _bin_table(lo, hi, nbins)
    if _native.clahe_kernels is not None and bin_of.dtype == np.uint8 and u16.ndim == 2:
        bins = np.empty(u16.shape, dtype=np.uint8)
        _native.clahe_kernels.gather_u8(np.ascontiguousarray(u16), bin_of, bins)
        return bins
    return bin_of[u16]


def _region_maps(bins: np.ndarray, kernel: tuple[int, int], nbins: int, clip_limit: float) -> np.ndarray:
    """skimage's clipped, equalised grey-level map of every contextual region, edge-padded by one."""
    (k0, k1), (h, w) = kernel, bins.shape
    pad = [(k // 2, (k - s % k) % k + int(np.ceil(k / 2.0))) for k, s in zip(kernel, (h, w))]
    n0, n1 = (h + sum(pad[0])) // k0 - 1, (w + sum(pad[1])) // k1 - 1
    if _native.clahe_kernels is not None and bins.dtype == np.uint8 and h % k0 == 0 and w % k1 == 0:
        # the regions start at the padding's end and tile the image exactly: no padded copy
        hist = np.zeros((n0 * n1, nbins), dtype=np.int64)
        _native.clahe_kernels.region_hist(np.ascontiguousarray(bins), k0, k1, n0, n1, hist, 0, 0)
        return _equalised_maps(hist, kernel, nbins, clip_limit, n0, n1)
    padded = np.pad(bins, pad, mode="reflect")
    if _native.clahe_kernels is not None and padded.dtype == np.uint8:
        hist = np.zeros((n0 * n1, nbins), dtype=np.int64)
        _native.clahe_kernels.region_hist(padded, k0, k1, n0, n1, hist)
    else:
        regions = padded[k0 // 2:k0 // 2 + n0 * k0, k1 // 2:k1 // 2 + n1 * k1].reshape(n0, k0, n1, k1)
        # bin + region x nbins in the narrowest integer that holds it (uint16 for 1024 px at kernel 128)
        index_type = np.promote_types(np.min_scalar_type(n0 * n1 * nbins - 1), bins.dtype)
        region_id = ((np.arange(n0).reshape(n0, 1, 1, 1) * n1 + np.arange(n1).reshape(1, 1, n1, 1)) * nbins)
        combined = np.add(regions, region_id.astype(index_type), dtype=index_type)
        hist = np.bincount(combined.ravel(), minlength=n0 * n1 * nbins).reshape(n0 * n1, nbins)
    return _equalised_maps(hist, kernel, nbins, clip_limit, n0, n1)


def _equalised_maps(hist: np.ndarray, kernel: tuple[int, int], nbins: int, clip_limit: float, n0: int,
                    n1: int) -> np.ndarray:
    """The regions' (n0 * n1, nbins) histograms clipped and equalised: `_region_maps`' result."""
    k0, k1 = kernel
    elements = k0 * k1
    clim = int(np.clip(clip_limit * elements, 1, None)) if clip_limit > 0.0 else elements
    clip_histograms(hist, clim)
    maps = map_histogram(hist, 0, NR_OF_GRAY - 1, elements).reshape(n0, n1, nbins)
    return np.pad(maps, [(1, 1), (1, 1), (0, 0)], mode="edge")


def clip_histograms(hist: np.ndarray, clip_limit: int) -> np.ndarray:
    """skimage's `clip_histogram` applied to every row of an (R, nbins) integer array, in place.

    The clip and the even spread of the excess over the bins below the limit are done for all
    rows at once (the same integer arithmetic, row by row); only a row with excess left after
    that (bins below the limit take one more, at a stride, as skimage does) goes through
    `_spread_remainder`. tests/test_deepcell_clahe.py compares rows with skimage's function.
    With the C kernels built, `_clahe_kernels.clip_histograms` does the same row by row (~1 ms less
    per 1024 x 1024 plane: 64 rows of numpy calls)."""
    if (_native.clahe_kernels is not None and hist.dtype == np.int64 and hist.ndim == 2
            and hist.flags.c_contiguous and hist.flags.writeable):
        _native.clahe_kernels.clip_histograms(hist, int(clip_limit))
        return hist
    size = hist.shape[1]
    n_excess = np.where(hist > clip_limit, hist - clip_limit, 0).sum(axis=1)
    np.minimum(hist, clip_limit, out=hist)
    bin_incr = n_excess // size
    upper = (clip_limit - bin_incr)[:, None]
    low = hist < upper
    n_excess -= low.sum(axis=1) * bin_incr
    hist += low * bin_incr[:, None]
    mid = (hist >= upper) & (hist < clip_limit)
    n_excess += np.where(mid, hist - clip_limit, 0).sum(axis=1)
    hist[mid] = clip_limit
    rows = np.flatnonzero(n_excess > 0)
    if rows.size:
        _spread_in_step(hist, clip_limit, rows, n_excess[rows])
    return hist


def _spread_in_step(hist: np.ndarray, clip_limit: int, rows: np.ndarray, n_excess: np.ndarray) -> None:
    """`_spread_remainder` for many rows at once: its first pass over start offsets runs for
    every row together (row r at start s adds one to the bins under the limit at s, s + step_r,
    ...), a row leaving when its excess is placed; a row that finishes the pass with excess left
    continues alone in `_spread_remainder` (the next pass, as skimage's while loop would)."""
    size = hist.shape[1]
    cols = np.arange(size)
    block = hist[rows]
    left = n_excess.copy()
    active = np.arange(rows.size)
    for start in range(size):
        sub = block[active]
        under = sub < clip_limit
        step = np.maximum(1, under.sum(axis=1) // left[active])
        hit = under & (cols >= start) & ((cols - start) % step[:, None] == 0)
        block[active] = sub + hit
        left[active] -= hit.sum(axis=1)
        active = active[left[active] > 0]
        if not active.size:
            break
    hist[rows] = block
    for i in active:  # a whole pass and still excess: skimage goes round again (or stops if nothing moved)
        if left[i] != n_excess[i]:
            _spread_remainder(hist[rows[i]], clip_limit, left[i])


def _spread_remainder(row: np.ndarray, clip_limit: int, n_excess: Any) -> None:
    """The last part of skimage's clip_histogram for one row: passes over start offsets, each
    adding one to every `step`-th bin still under the limit, until no excess is left or a
    whole pass places nothing."""
    while n_excess > 0:
        left_before = n_excess
        for start in range(row.size):
            under = row < clip_limit
            step = max(1, np.count_nonzero(under) // n_excess)
            hit = under[start::step]
            row[start::step][hit] += 1
            n_excess -= np.count_nonzero(hit)
            if n_excess <= 0:
                break
        if left_before == n_excess:
            break


def clahe_grey(image: np.ndarray, kernel_size=None, clip_limit: float = 0.01, nbins: int = 256) -> np.ndarray:
    """skimage's `_clahe` result (uint16 grey levels, before its final rescale) for a 2-D image."""
    return _clahe_grey_range(image, kernel_size, clip_limit, nbins)[0]


def _clahe_grey_range(image: np.ndarray, kernel_size, clip_limit: float, nbins: int,
                      bins: np.ndarray | None = None) -> tuple[np.ndarray, int, int]:
    """clahe_grey's result with its smallest and largest grey level; `bins`, when given, are
    `_bins(image, nbins)` (a caller that made them in its own pass), `image` then unused."""
    if (image if bins is None else bins).ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {(image if bins is None else bins).shape}")
    if bins is None:
        bins = _bins(image, nbins)
    kernel = _kernel(bins.shape, kernel_size)
    maps = _region_maps(bins, kernel, nbins, clip_limit)
    if _native.clahe_kernels is not None:
        out = np.empty(image.shape, dtype=np.uint16)
        if bins.dtype.itemsize > 2:  # more than 256 bins: a bin is at most 2**14 - 1
            bins = bins.astype(np.uint16)
        lo, hi = _native.clahe_kernels.clahe_map(bins, np.ascontiguousarray(maps, dtype=np.float64), *kernel, out)
        return out, lo, hi
    grey = _map_numpy(bins, maps, kernel, nbins)
    return grey, int(grey.min()), int(grey.max())


def _map_numpy(bins: np.ndarray, maps: np.ndarray, kernel: tuple[int, int], nbins: int) -> np.ndarray:
    """The bilinear mapping in numpy, band by band (what `_clahe_kernels.clahe_map` does in one pass)."""
    (k0, k1), (h, w) = kernel, bins.shape
    p0, p1 = k0 // 2, k1 // 2
    m1 = maps.shape[1] - 1  # processing blocks per row of the padded image
    # per column of the image: its processing block and its weight along x (skimage: x / k1)
    col = np.arange(w) + p1
    col_block, fx = col // k1, (col % k1) / k1
    wx = (1 - fx, fx)
    tables = [np.ascontiguousarray(maps[e0:e0 + maps.shape[0] - 1, e1:e1 + m1], dtype=np.float64).ravel()
              for e0 in (0, 1) for e1 in (0, 1)]
    edges = ((0, 0), (0, 1), (1, 0), (1, 1))
    # each term's weight, skimage's np.prod([x weight, y weight]), for every row phase in a block
    # when that is small enough to keep (else per band)
    phase = (np.arange(k0) / k0)[:, None]
    keep = 4 * k0 * w * 8 <= _WEIGHT_CACHE_BYTES
    weights = [wx[e1] * (1 - phase, phase)[e0] for e0, e1 in edges] if keep else None
    out = np.empty((h, w), dtype=np.uint16)
    band = max(1, min(h, _BAND_PIXELS // max(w, 1)))
    for r0, r1 in _bands(h, p0, k0, band):
        block = (r0 + p0) // k0
        ph0, ph1 = (r0 + p0) % k0, (r1 - 1 + p0) % k0 + 1
        idx = np.add(bins[r0:r1], ((block * m1 + col_block) * nbins)[None, :], dtype=np.intp)
        acc = None
        for e, (e0, e1) in enumerate(edges):
            if weights is not None:
                weight = weights[e][ph0:ph1]
            else:
                fy = phase[ph0:ph1]
                weight = wx[e1] * (1 - fy, fy)[e0]
            term = tables[e][idx]
            term *= weight  # map value * weight in float64, then rounded to float32, as skimage does
            if acc is None:
                acc = term.astype(np.float32)
            else:
                acc += term.astype(np.float32)
        out[r0:r1] = acc  # float32 -> uint16 truncates, as skimage's astype does
    return out


def equalize_adapthist_parts(image: np.ndarray, kernel_size=None, clip_limit: float = 0.01, nbins: int = 256,
                             float_dtype: type | None = None,
                             bins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """equalize_adapthist_fast's result as (grey, table), the result being table[grey]: uint16
    grey levels and their final rescale (for callers that write several planes in one pass).
    `bins`: the image's histogram bins when the caller made them (preprocess: straight from
    the float plane, `full_range_bins`); `image` then only gives the dtype."""
    grey, lo, hi = _clahe_grey_range(image, kernel_size, clip_limit, nbins, bins)
    if float_dtype is None:
        float_dtype = np.float32 if image.dtype in (np.float16, np.float32) else np.float64
    levels = np.arange(0, hi + 1).astype(float_dtype)
    return grey, rescale_intensity(levels, in_range=(float(lo), float(hi)))


def equalize_adapthist_fast(image: np.ndarray, kernel_size=None, clip_limit: float = 0.01,
                            nbins: int = 256, float_dtype: type | None = None,
                            out: np.ndarray | None = None, bins: np.ndarray | None = None) -> np.ndarray:
    """`skimage.exposure.equalize_adapthist` for a 2-D float image in [0, 1] (or uint16), same output.

    `float_dtype` names the result's dtype (skimage: float32 for float16/32 input, else float64):
    pass np.float32 with the uint16 that `img_as_uint` made of a float32 image to get that image's
    result. `out` (of the image's shape, that dtype) receives the result instead of a new array.
    `bins` as for `equalize_adapthist_parts`."""
    grey, rescaled = equalize_adapthist_parts(image, kernel_size, clip_limit, nbins, float_dtype, bins)
    if _native.clahe_kernels is not None and rescaled.dtype in (np.float32, np.float64):
        if out is None:
            out = np.empty(grey.shape, dtype=rescaled.dtype)
        if out.dtype == rescaled.dtype and out.shape == grey.shape:
            _native.clahe_kernels.lookup(grey, rescaled, out)  # one pass, into a strided `out` too
            return out
    if out is None:
        return rescaled[grey]
    if out.flags.c_contiguous:
        np.take(rescaled, grey, out=out, mode="clip")  # every grey level is <= hi: clip never applies
    else:
        out[...] = rescaled[grey]
    return out
