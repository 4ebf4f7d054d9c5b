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


def disk(radius: int) -> np.ndarray:
    """skimage.morphology.disk(radius): uint8, 1 where x**2 + y**2 <= radius**2 (tests pin the equality).

    Here so that the deep watershed's markers need nothing from skimage.morphology, whose import
    costs a worker ~23 MB (see deepcell/flood.py)."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)


def _fallback(image, h, footprint):
    # rare: imported only when needed
    from skimage.morphology import h_maxima as skimage_h_maxima

    return skimage_h_maxima(image, h, footprint=footprint)


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
    if h < 0:  # the seed would exceed the image: let skimage raise its own error
        return _fallback(image, h, footprint)

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

    # 3) the full footprint at the surviving candidates, on skimage's padded images (padded
    # wider so that the ring certificate below can look past the footprint)
    rx, ry = cx, cy
    is_disk = rx == ry and np.array_equal(footprint, disk(rx))
    inner = min(_RING_INNER, rx)  # the certificate needs inner <= radius
    ring = inner + rx if is_disk else 0
    pad = max(rx, ry) + ring
    fpad = np.pad(f, pad, constant_values=m_min)
    mpad = np.pad(m, pad, constant_values=m_min)
    px, py = np.nonzero(cand)
    if px.size * _CANDIDATE_SHARE > f.size:  # noise-like heads: skimage is as cheap
        return _fallback(image, h, footprint)
    ox, oy = np.nonzero(footprint)
    ox, oy = ox - cx, oy - cy
    keep = _none_hit(mpad, px + pad, py + pad, ox, oy, f[px, py], fails)
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
    starts = np.concatenate(([0], breaks))
    sizes = np.diff(np.concatenate((starts, [px.size])))

    # 5) ring certificate for single-pixel groups (the usual object top): nothing of B_p at a
    # distance in (a, a + r] means B_p's component stays within distance a, which step 3
    # already showed is free of Q_p (a <= r), so the pixel is a maximum.
    undecided = np.ones(starts.size, dtype=bool)
    if is_disk:
        single = np.flatnonzero(sizes == 1)
        sx, sy = px[starts[single]], py[starts[single]]
        rox, roy = _ring_offsets(inner, rx)
        ok = _none_hit(fpad, sx + pad, sy + pad, rox, roy, f[sx, sy], fails)
        markers[sx[ok], sy[ok]] = 1
        undecided[single[ok]] = False

    # 6) the rest: flood B_p from the group inside a growing window. Each flood costs about
    # what skimage spends on a few hundred pixels, so noise-like images with very many
    # undecided groups are cheaper (and identical) through skimage.
    todo = np.flatnonzero(undecided)
    # skimage visits every footprint neighbour of every pixel; allow the floods a fraction
    budget = [f.size * max(2.0, footprint.sum() / _WORK_PER_NEIGHBOUR)]
    if todo.size * _FLOOD_COST_PIXELS > f.size:
        return _fallback(image, h, footprint)
    try:
        for gi in todo:
            sl = slice(starts[gi], starts[gi] + sizes[gi])
            gx, gy = px[sl], py[sl]
            if _is_maximum(fpad, mpad, gx + pad, gy + pad, f[gx[0], gy[0]], footprint, local,
                           fails, (rx, ry), is_disk, budget):
                markers[gx, gy] = 1
    except _OverBudget:
        return _fallback(image, h, footprint)
    return markers


class _OverBudget(Exception):
    """The floods have cost more than skimage's reconstruction would."""


def _spend(budget: list, work: float) -> None:
    budget[0] -= work
    if budget[0] < 0:
        raise _OverBudget


_RING_INNER = 3
_FLOOD_COST_PIXELS = 200
_CANDIDATE_SHARE = 8  # more than 1 candidate in this many pixels: leave it to skimage
_WORK_PER_NEIGHBOUR = 16  # flood work units (window pixels) worth one reconstruction step


def _ring_offsets(inner: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets at a squared distance in (inner^2, (inner + radius)^2]."""
    outer = inner + radius
    ox, oy = np.mgrid[-outer:outer + 1, -outer:outer + 1]
    d2 = ox ** 2 + oy ** 2
    sel = (d2 > inner ** 2) & (d2 <= outer ** 2)
    return ox[sel], oy[sel]


def _none_hit(arr, px, py, ox, oy, values, fails, chunk: int = 2048) -> np.ndarray:
    """For each pixel: no offset neighbour x in `arr` with fails(value, x)."""
    keep = np.ones(px.size, dtype=bool)
    for start in range(0, px.size, chunk):
        sl = slice(start, start + chunk)
        near = arr[px[sl, None] + ox[None, :], py[sl, None] + oy[None, :]]
        keep[sl] = ~fails(values[sl][:, None], near).any(axis=1)
    return keep


_POINTS_LIMIT = 600


def _is_maximum(fpad, mpad, gx, gy, fp, footprint, local, fails, radius, is_disk, budget) -> bool:
    """Flood B_p from the group inside a growing window; False as soon as Q_p is reached.

    With few B_p pixels in the window the flood runs on their coordinates (pairwise footprint
    adjacency); otherwise on the window grid (labels plus a footprint dilation).
    """
    rx, ry = radius
    margin = max(rx, ry) + 3
    while True:
        x0, x1 = max(gx.min() - margin, 0), min(gx.max() + margin + 1, fpad.shape[0])
        y0, y1 = max(gy.min() - margin, 0), min(gy.max() + margin + 1, fpad.shape[1])
        inside = fails(fp, fpad[x0:x1, y0:y1])  # B_p in the window
        bx, by = np.nonzero(inside)
        _spend(budget, inside.size)
        if bx.size <= _POINTS_LIMIT:
            _spend(budget, bx.size * bx.size / 16)
            closed = _flood_points(bx, by, gx - x0, gy - y0, fails(fp, mpad[x0:x1, y0:y1][bx, by]),
                                   footprint, inside.shape)
        else:
            closed = _flood_grid(inside, gx - x0, gy - y0, fails(fp, mpad[x0:x1, y0:y1]),
                                 footprint, local, rx, is_disk, budget)
        if closed is None:
            return False
        rows, cols = closed
        open_edge = ((x0 > 0 and rows[0] <= rx) or (x1 < fpad.shape[0] and rows[1] >= inside.shape[0] - rx - 1)
                     or (y0 > 0 and cols[0] <= ry) or (y1 < fpad.shape[1] and cols[1] >= inside.shape[1] - ry - 1))
        if not open_edge:
            return True
        margin *= 2


def _flood_points(bx, by, sx, sy, in_q, footprint, shape):
    """Component of the seeds among B points; None if it holds a Q point, else its extent."""
    cx, cy = footprint.shape[0] // 2, footprint.shape[1] // 2
    seed = np.zeros(shape, dtype=bool)
    seed[sx, sy] = True
    reach = seed[bx, by]
    dx = bx[:, None] - bx[None, :]
    dy = by[:, None] - by[None, :]
    adjacent = (np.abs(dx) <= cx) & (np.abs(dy) <= cy)
    adjacent[adjacent] = footprint[dx[adjacent] + cx, dy[adjacent] + cy]
    count = int(reach.sum())
    while True:
        if (reach & in_q).any():
            return None
        reach = adjacent[reach].any(axis=0) | reach
        grown = int(reach.sum())
        if grown == count:
            break
        count = grown
    rx, ry = bx[reach], by[reach]
    return (rx.min(), rx.max()), (ry.min(), ry.max())


def _flood_grid(inside, sx, sy, reach_q, footprint, local, radius, is_disk, budget):
    """The same flood on the window grid, for windows with many B pixels."""
    comp, count = ndi.label(inside, structure=local)
    lut = np.zeros(count + 1, dtype=bool)
    lut[comp[sx, sy]] = True
    region = lut[comp]
    size = int(region.sum())
    while True:
        if (region & reach_q).any():
            return None
        _spend(budget, 4 * inside.size)
        if is_disk:
            near = ndi.distance_transform_edt(~region) <= radius
        else:
            near = ndi.binary_dilation(region, structure=footprint)
        lut[comp[near & inside]] = True
        region = lut[comp]
        grown = int(region.sum())
        if grown == size:
            break
        size = grown
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    return (rows[0], rows[-1]), (cols[0], cols[-1])
