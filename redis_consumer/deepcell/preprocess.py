"""The applications' image normalisations, run on the whole (resized) image before tiling.

Semantics from deepcell-toolbox 0.12 `deepcell_toolbox/processing.py` (histogram_normalization
L65-101, percentile_threshold L104-132), deepcell-tf `deepcell/applications/mesmer.py:48-72`
(mesmer_preprocess) and deepcell-spots 0.3 `deepcell_spots/preprocessing_utils.py:61-93`
(min_max_normalize). All take and return (batch, x, y, channel) arrays.
"""

from __future__ import annotations

import numpy as np
from skimage.exposure import rescale_intensity

from redis_consumer.deepcell import _native, clahe
from redis_consumer.deepcell.clahe import (
    equalize_adapthist_fast,
    equalize_adapthist_parts,
)
from redis_consumer.utils import quantiles


def _check_rank(image: np.ndarray) -> None:
    if image.ndim != 4:
        raise ValueError(f"expected a (batch, x, y, channel) image, got shape {image.shape}")


def histogram_normalization(image: np.ndarray, kernel_size: int | tuple | None = None) -> np.ndarray:
    """CLAHE per (batch, channel) after rescaling to [0, 1]; a constant plane becomes zeros.

    kernel_size None keeps skimage's default (1/8 of each image dimension), clip_limit 0.01 and
    256 bins, as the toolbox does. Returns float32. The CLAHE is `clahe.equalize_adapthist_fast`,
    bit-identical to skimage's `equalize_adapthist` at ~1/12 of its CPU.
    """
    _check_rank(image)
    if image.shape[-1] == 1 and (image.dtype == np.float32 or (image.dtype == np.uint16 and _reads_uint16())):
        # one channel of float32 (what the pipeline feeds; uint16 as it is stored, read as its
        # exact float32 values by the C pass, so no float32 copy is made): each plane is read
        # from the input and its result written into a new array, instead of a float32 copy
        # rewritten in place
        out = np.empty(image.shape, dtype=np.float32)
        for b in range(image.shape[0]):
            _normalise_plane(image[b, ..., 0], kernel_size, out[b, ..., 0])
        return out
    return _histogram_normalization(image.astype(np.float32), kernel_size)  # always a copy, like the toolbox


def _reads_uint16() -> bool:
    """Whether `_unit_bins` takes a uint16 plane as it is (the C kernels are built)."""
    return _native.percentile_kernels is not None and _native.clahe_kernels is not None


def _histogram_normalization(out: np.ndarray, kernel_size: int | tuple | None) -> np.ndarray:
    """histogram_normalization of a float32 array the caller gives away: rewritten in place.

    Each (batch, channel) plane is read once into a contiguous copy (a channel of (B, X, Y, C)
    is strided, and every pass over it was slow) and its result written back once."""
    for b in range(out.shape[0]):
        for c in range(out.shape[-1]):
            target = out[b, ..., c]
            _normalise_plane(np.ascontiguousarray(target) if out.shape[-1] > 1 else target, kernel_size, target)
    return out


def _normalise_plane(plane: np.ndarray, kernel_size: int | tuple | None, target: np.ndarray) -> None:
    """One plane's CLAHE (zeros for a constant plane) into `target`, which may be `plane` itself.
    A uint16 plane gives the result of its float32 cast (its min and max are the cast's)."""
    lo, hi = plane.min(), plane.max()
    if lo == hi and not np.isnan(lo):  # constant (the toolbox's `(plane == plane.flat[0]).all()`)
        target[...] = 0
        return
    bins = _unit_bins(plane, (float(lo), float(hi)))
    if bins is not None:
        equalize_adapthist_fast(bins, kernel_size=kernel_size, float_dtype=np.float32, out=target, bins=bins)
        return
    if plane.dtype != np.float32:  # the paths below start from the float32 values
        plane = plane.astype(np.float32)
    unit = _unit_uint16(plane, (float(lo), float(hi)))
    equalize_adapthist_fast(unit, kernel_size=kernel_size, float_dtype=np.float32, out=target)


def _unit_bins(plane: np.ndarray, bounds: tuple[float, float], ceiling: np.floating | None = None) -> np.ndarray | None:
    """CLAHE's histogram bins of `_unit_uint16(plane, bounds, ceiling)` in one C pass
    (`clip_unit_bins`), the uint16 image never written: its values span 0..65535 (the plane's
    min maps to 0, its max to 65535), whose bins `clahe.full_range_bins` holds. None where the
    C pass does not apply, or when the values did not span that range (then the caller's
    uint16 path recomputes; not seen in practice). A uint16 plane is read as its float32 cast's
    values, exactly."""
    kernels = _native.percentile_kernels
    lo, hi = bounds
    with np.errstate(over="ignore"):
        scale = np.float32(hi - lo)
    if not (kernels is not None and plane.dtype in (np.float32, np.uint16) and plane.ndim == 2 and np.isfinite(lo)
            and np.isfinite(hi) and hi > lo and np.isfinite(scale) and _native.clahe_kernels is not None):
        return None
    bins = np.empty(plane.shape, dtype=np.uint8)
    span = kernels.clip_unit_bins(plane, np.inf if ceiling is None else float(ceiling), float(np.float32(lo)),
                                  float(scale), clahe.full_range_bins(256), bins)
    return bins if span == (0, 65535) else None


def _unit_uint16(plane: np.ndarray, bounds: tuple[float, float] | None = None,
                 ceiling: np.floating | None = None) -> np.ndarray:
    """`img_as_uint(rescale_intensity(plane, out_range=(0.0, 1.0)))` of a float32 plane, the
    same values in one C pass (or four numpy passes) instead of ten (the two steps' float32
    arithmetic, without the no-op clips, `* 1.0 + 0.0` and copies); CLAHE's first step is exactly
    that conversion. `bounds` is the plane's (min, max) when the caller has it; `ceiling` (C path
    only) clips the plane first, as np.where(plane > ceiling, ceiling, plane), and `bounds` are
    then the clipped plane's."""
    lo, hi = bounds if bounds is not None else (float(plane.min()), float(plane.max()))
    with np.errstate(over="ignore"):  # a range past float32's: inf, which takes the numpy steps
        scale = np.float32(hi - lo)  # rescale_intensity: (image - imin) / (imax - imin) in float32
    kernels = _native.percentile_kernels
    fused = (kernels is not None and plane.dtype == np.float32 and plane.ndim == 2 and np.isfinite(lo)
             and np.isfinite(hi) and hi > lo and np.isfinite(scale))
    if ceiling is not None and not fused:
        raise ValueError("a ceiling needs the C kernels, a float32 plane and a finite range")
    if fused:
        unit16 = np.empty(plane.shape, dtype=np.uint16)
        kernels.clip_unit_u16(plane, np.inf if ceiling is None else float(ceiling), float(np.float32(lo)),
                              float(scale), unit16)
        return unit16
    if plane.dtype != np.float32 or not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return rescale_intensity(plane, out_range=(0.0, 1.0))
    unit = np.subtract(plane, np.float32(lo))
    unit /= scale
    unit *= np.float32(65535)  # img_as_uint: multiply by 65535 in float32, round half to even
    np.rint(unit, out=unit)
    np.clip(unit, 0, 65535, out=unit)
    return unit.astype(np.uint16)


def _nonzero_ceiling(plane: np.ndarray, percentile: float) -> tuple[int, np.floating | None, float, float] | None:
    """(n, ceiling, lo, hi) of a 2-D float plane in one C pass (any strides): n non-zero pixels,
    `np.percentile` of them (None when n is 0) and the plane's min and max; None where the C
    selection does not apply (not built, another dtype, a NaN pixel, q not a plain number). A
    uint16 plane gives its float32 cast's answer (the ceiling a float32)."""
    kernels = _native.percentile_kernels
    if (kernels is None or plane.ndim != 2 or plane.dtype not in (np.float32, np.float64, np.uint16)
            or type(percentile) not in (int, float) or not 0 <= percentile <= 100 or plane.size >= 2**32 - 1):
        return None
    fraction = float(np.true_divide(percentile, 100))
    if plane.dtype == np.uint16:  # its float32 cast's statistics (exact), by one histogram pass
        dtype = np.float32
        n, nans, a, b, lo, hi = kernels.order_stats_u16(plane, fraction, True)
    else:
        dtype = plane.dtype.type
        n, nans, a, b, lo, hi = kernels.order_stats(plane, fraction, True)
    if nans:
        return None  # numpy's NaN answer (and the clip it implies) stays numpy's
    if n == 0:
        return 0, None, lo, hi
    return n, quantiles.interpolate(n, percentile, dtype(a), dtype(b), dtype), lo, hi


def _clip_into(plane: np.ndarray, ceiling: np.floating, out: np.ndarray) -> None:
    """out = np.where(plane > ceiling, ceiling, plane) (what the toolbox's clip does)."""
    if not np.isnan(ceiling) and ceiling != 0:  # min(x, c) = where(x > c, c, x) for every x then
        np.minimum(plane, ceiling, out=out)
    else:
        out[...] = plane
        out[out > ceiling] = ceiling


def percentile_threshold(image: np.ndarray, percentile: float = 99.9) -> np.ndarray:
    """Clip each (batch, channel) plane at the given percentile of its non-zero pixels.

    An all-zero plane stays zero; the dtype is kept (the toolbox starts from zeros_like). The
    percentile is `np.percentile`'s value: its two order statistics by the C radix selection
    (`_percentile_kernels.order_stats`, no copy of the strided plane) or by one partition
    (`utils.quantiles`) where that does not apply.
    """
    _check_rank(image)
    out = np.zeros_like(image)
    for b in range(image.shape[0]):
        for c in range(image.shape[-1]):
            stats = _nonzero_ceiling(image[b, ..., c], percentile)
            if stats is not None:
                if stats[1] is not None:
                    _clip_into(image[b, ..., c], stats[1], out[b, ..., c])
                continue
            plane = np.array(image[b, ..., c], copy=True)  # one strided read, then contiguous passes
            if _clip_plane(plane, percentile):
                out[b, ..., c] = plane
    return out


def _clip_plane(plane: np.ndarray, percentile: float) -> bool:
    """percentile_threshold of one private contiguous plane, in place; False (plane untouched)
    when it has no non-zero pixel (the toolbox's result is then zeros)."""
    nonzero = plane[plane != 0]
    if not nonzero.size:
        return False
    # the same percentile, partitioning our private copy of the non-zero pixels
    ceiling = quantiles.percentile(nonzero, percentile, overwrite_input=True)
    _clip_into(plane, ceiling, plane)
    return True


def min_max_normalize(image: np.ndarray, clip: bool = False) -> np.ndarray:
    """Per (batch, channel): optionally clip to [p0.01, p99.9], then map [min, max] to [0, 1].

    The spot application's normalisation. A constant plane becomes zeros (the library would
    divide by zero and produce NaN). Returns float32.
    """
    _check_rank(image)
    out = image.astype(np.float32)
    for b in range(out.shape[0]):
        for c in range(out.shape[-1]):
            plane = out[b, ..., c]
            if clip:
                low, high = np.percentile(plane, (0.01, 99.9))
                np.clip(plane, low, high, out=plane)
            lo, hi = plane.min(), plane.max()
            if hi > lo:
                plane[...] = (plane - lo) / (hi - lo)
            else:
                plane[...] = 0
    return out


def _mesmer_parts(plane: np.ndarray, percentile: float,
                  kernel_size: int | tuple | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Threshold then CLAHE of one float32 plane (or uint16: its float32 cast's) by the C kernels, as (grey, table): the result
    is table[grey]. None where they do not apply (then the numpy steps run). The clipped plane's
    range is min(range, ceiling), so it is never written: one pass clips and converts to uint16."""
    stats = _nonzero_ceiling(plane, percentile)
    if stats is None:
        return None
    _, ceiling, lo, hi = stats
    if ceiling is not None and not np.isnan(ceiling):  # a NaN ceiling clips nothing
        lo, hi = min(lo, float(ceiling)), min(hi, float(ceiling))
    if ceiling is None or lo == hi:  # no non-zero pixel (the threshold's zeros), or constant once clipped
        return np.zeros(plane.shape, dtype=np.uint16), np.zeros(1, dtype=np.float32)
    with np.errstate(over="ignore"):
        finite_range = np.isfinite(np.float32(hi - lo))
    if not (np.isfinite(lo) and np.isfinite(hi) and finite_range):
        return None  # rescale_intensity's own handling of infinities: the numpy steps
    bins = _unit_bins(plane, (lo, hi), ceiling)
    if bins is not None:
        return equalize_adapthist_parts(bins, kernel_size=kernel_size, float_dtype=np.float32, bins=bins)
    unit = _unit_uint16(plane.astype(np.float32, copy=False), (lo, hi), ceiling)
    return equalize_adapthist_parts(unit, kernel_size=kernel_size, float_dtype=np.float32)


def _mesmer_planes(image: np.ndarray, b: int, percentile: float, kernel_size: int | tuple | None,
                   out: np.ndarray) -> None:
    """mesmer_preprocess of batch item b into out[b]: C parts where they apply (both channels
    of a two-channel image written in one pass), the numpy steps on a contiguous copy elsewhere."""
    parts = [_mesmer_parts(image[b, ..., c], percentile, kernel_size) for c in range(image.shape[-1])]
    kernels = _native.clahe_kernels
    if kernels is not None and len(parts) == 2 and all(p is not None and p[1].dtype == np.float32 for p in parts):
        kernels.lookup2(parts[0][0], parts[0][1], parts[1][0], parts[1][1], out[b])
        return
    for c, part in enumerate(parts):
        if part is not None:
            grey, table = part
            if kernels is not None:
                kernels.lookup(grey, table, out[b, ..., c])
            else:
                out[b, ..., c] = table[grey]
            continue
        plane = np.array(image[b, ..., c], dtype=np.float32 if image.dtype == np.uint16 else None, copy=True)
        if not _clip_plane(plane, percentile):
            plane[...] = 0  # the threshold's zeros_like (also for -0.0 pixels)
        _normalise_plane(plane, kernel_size, plane)
        out[b, ..., c] = plane


def mesmer_preprocess(
    image: np.ndarray,
    threshold: bool = True,
    percentile: float = 99.9,
    normalize: bool = True,
    kernel_size: int = 128,
) -> np.ndarray:
    """Mesmer's preprocessing: percentile_threshold then histogram_normalization(kernel 128).

    For a float32 image (what the pipeline feeds) both steps run per plane, written into the
    result once: the same values as the two steps one after the other. With the C kernels a plane
    is read twice in place (the selection, then the clip and uint16 conversion in one pass) and
    CLAHE's final lookup writes both channels of a two-channel image in one pass; otherwise the
    steps run on one contiguous copy."""
    _check_rank(image)
    if threshold and normalize and (image.dtype == np.float32 or (image.dtype == np.uint16 and _reads_uint16())):
        # uint16 (the stored pixels) is read as its float32 cast, exactly: no float32 copy
        out = np.empty(image.shape, dtype=np.float32)
        for b in range(image.shape[0]):
            _mesmer_planes(image, b, percentile, kernel_size, out)
        return out
    if image.dtype == np.uint16:  # the float32 cast the fused path reads it as (the kiosk's cast)
        image = image.astype(np.float32)
    out = image  # both steps return new arrays and leave their input alone
    if threshold:
        out = percentile_threshold(out, percentile=percentile)
    if normalize:  # (a float32 threshold result only arises on the per-plane path above)
        out = histogram_normalization(out, kernel_size=kernel_size)
    return np.array(image, copy=True) if out is image else out
