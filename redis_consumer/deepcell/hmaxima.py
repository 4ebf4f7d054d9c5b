"""`skimage.morphology.h_maxima` with identical output, without reconstructing the whole image.

skimage (0.26, `morphology/extrema.py` h_maxima and `morphology/grayreconstruct.py`) marks pixel
p when `f(p) - R(p) >= h`, where R is the grey reconstruction by dilation of the seed
`m = f - h - 2*eps*|f|` under f, with the footprint as neighbourhood and both images padded by
the footprint's half-size with `min(m)`. R(p) is the best `min(m(q), min f over a path q->p)`,
so, because `x -> f(p) - x` is monotone in floating point too, p is NOT marked exactly when
the footprint-connected component of B_p = {r : f(p) - f(r) < h} that holds p contains a pixel
of Q_p = {q : f(p) - m(q) < h} (all comparisons in skimage's own dtypes).

That test is cheap where it matters: a pixel is a candidate only if no footprint neighbour is
already in Q_p (a 3x3 pre-test, then the full footprint at the few survivors); a candidate whose
B_p is the whole image is decided by the image's max(m); every other candidate (in practice the
tops of the objects) is flooded inside a small window that grows until its component is closed.
Anything outside these assumptions (integer images, footprints without the 4-neighbourhood, a
padding pixel inside some B_p) falls back to skimage itself.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima as _skimage_h_maxima


def _fallback(image, h, footprint):
    return _skimage_h_maxima(image, h, footprint=footprint)


def h_maxima(image: np.ndarray, h: float, footprint: np.ndarray) -> np.ndarray:
    """uint8 mask of the h-maxima of a 2-D float image; equal to skimage's for the same input."""
    footprint = np.asarray(footprint, dtype=bool)
    if (image.ndim != 2 or not np.issubdtype(image.dtype, np.floating) or image.dtype.itemsize < 4
            or footprint.ndim != 2 or any(d % 2 == 0 or d < 3 for d in footprint.shape)):
        return _fallback(image, h, footprint)
    cx, cy = footprint.shape[0] // 2, footprint.shape[1] // 2
    local = footprint[cx - 1:cx + 2, cy - 1:cy + 2].copy()
    local[1, 1] = True
    if not (local[0, 1] and local[2, 1] and local[1, 0] and local[1, 2]):
        return _fallback(image, h, footprint)
    if h > np.ptp(image):
        return np.zeros(image.shape, dtype=np.uint8)
    if h == 0:
        raise ValueError("h = 0 is ambiguous, use local_maxima() instead?")

    f = image
    resolution = 2 * np.finfo(f.dtype).resolution * np.abs(f)
    m = (f - h - resolution).astype(f.dtype, copy=False)  # skimage's seed, in its float dtype
    m_min, m_max, f_min = m.min(), m.max(), f.min()

    def fails(fp, x):  # "f(p) - x < h", i.e. x would take the residue below h
        return (fp - x) < h

    # If a padding pixel could join some B_p, skimage's flat-index neighbours (which wrap
    # around rows inside its padding) matter: leave that case to skimage.
    if fails(f_min, m_min):
        return _fallback(image, h, footprint)

    # 1) 3x3 pre-test: a pixel with a neighbour in Q_p (or failing on itself) is not a maximum.
    near = ndi.maximum_filter(m, footprint=local, mode="constant", cval=m_min)
    cand = ~fails(f, near)
    markers = np.zeros(f.shape, dtype=np.uint8)
    if not cand.any():
        return markers
    # 2) B_p covers the whole image: the component is the image, decided by max(m).
    whole = cand & fails(f, f_min)
    markers[whole & ~fails(f, m_max)] = 1
    cand &= ~whole
    if not cand.any():
        return markers

    # 3) the full footprint at the surviving candidates, on skimage's padded images
    rx, ry = cx, cy
    fpad = np.pad(f, ((rx, rx), (ry, ry)), constant_values=m_min)
    mpad = np.pad(m, ((rx, rx), (ry, ry)), constant_values=m_min)
    px, py = np.nonzero(cand)
    ox, oy = np.nonzero(footprint)
    ox, oy = ox - cx, oy - cy
    keep = np.ones(px.size, dtype=bool)
    for start in range(0, px.size, 4096):
        sl = slice(start, start + 4096)
        gx = px[sl, None] + rx + ox[None, :]
        gy = py[sl, None] + ry + oy[None, :]
        keep[sl] = ~fails(f[px[sl], py[sl]][:, None], mpad[gx, gy]).any(axis=1)
    px, py = px[keep], py[keep]
    if px.size == 0:
        return markers

    # 4) group equal-valued candidates connected through each other (same B_p, same answer)
    cand = np.zeros(f.shape, dtype=bool)
    cand[px, py] = True
    comp, _ = ndi.label(cand, structure=local)
    values = f[px, py]
    order = np.lexsort((values, comp[px, py]))
    px, py, values = px[order], py[order], values[order]
    keys = comp[px, py]
    breaks = np.flatnonzero((np.diff(keys) != 0) | (np.diff(values) != 0)) + 1
    for gx, gy in zip(np.split(px, breaks), np.split(py, breaks)):
        if _is_maximum(fpad, mpad, gx + rx, gy + ry, f[gx[0], gy[0]], footprint, local, fails,
                       (rx, ry)):
            markers[gx, gy] = 1
    return markers


def _is_maximum(fpad, mpad, gx, gy, fp, footprint, local, fails, radius) -> bool:
    """Flood B_p from the group inside a growing window; False as soon as Q_p is reached."""
    rx, ry = radius
    margin = 4 * max(rx, ry) + 8
    while True:
        x0, x1 = max(gx.min() - margin, 0), min(gx.max() + margin + 1, fpad.shape[0])
        y0, y1 = max(gy.min() - margin, 0), min(gy.max() + margin + 1, fpad.shape[1])
        inside = fails(fp, fpad[x0:x1, y0:y1])  # B_p in the window
        reach_q = fails(fp, mpad[x0:x1, y0:y1])
        comp, _ = ndi.label(inside, structure=local)
        region = np.zeros(inside.shape, dtype=bool)
        region[gx - x0, gy - y0] = True
        ids = np.unique(comp[region])
        region = np.isin(comp, ids)
        while True:
            if (region & reach_q).any():
                return False
            grown = ndi.binary_dilation(region, structure=footprint) & inside
            ids = np.unique(comp[grown])
            grown = np.isin(comp, ids)
            if grown.sum() == region.sum():
                break
            region = grown
        # closed inside the window? (nothing of it within reach of a window edge that is not
        # the padded image's edge)
        rows = np.flatnonzero(region.any(axis=1))
        cols = np.flatnonzero(region.any(axis=0))
        open_edge = ((x0 > 0 and rows[0] < rx + 1) or (x1 < fpad.shape[0] and rows[-1] >= region.shape[0] - rx - 1)
                     or (y0 > 0 and cols[0] < ry + 1) or (y1 < fpad.shape[1] and cols[-1] >= region.shape[1] - ry - 1))
        if not open_edge:
            return True
        margin *= 2
