"""Synthetic stand-ins for the DeepCell networks' output heads, computed from the image itself.

The dev server's DeepCell-signature models (`deepcell_models.py`) call these so the full kiosk
pipeline (tiling, deep watershed, spot decoding, tracking) has meaningful heads to work on
without TensorFlow or trained weights. They mimic what the trained heads *represent* (the
training targets of deepcell-tf's transforms: an inner distance that peaks at each object's
centre, an outer distance / interior that is positive inside objects, 3-class edge / interior /
background maps, spot probability plus sub-pixel offsets), not the networks' exact values.
Every function takes one tile (H, W) or (H, W, C) float32 in [0, 1] (the applications normalise
before tiling) and is deterministic.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

F32 = np.float32


def foreground_mask(tile: np.ndarray, threshold: float = 0.5, sigma: float = 1.0) -> np.ndarray:
    """Bright-blob mask: Gaussian-smoothed tile above a fixed threshold (same in every tile, so
    overlapping tiles agree), small specks and holes removed."""
    smooth = ndi.gaussian_filter(np.asarray(tile, F32), sigma, mode="reflect")
    mask = smooth > threshold
    mask = ndi.binary_opening(mask, iterations=1)
    return ndi.binary_fill_holes(mask)


def contrast_mask(tile: np.ndarray, threshold: float = 0.08, window: int = 5) -> np.ndarray:
    """Phase-contrast style mask: a cell's outline (halo, dark rim) has high local variation in
    either direction, so threshold the local standard deviation and fill the closed outlines."""
    x = ndi.gaussian_filter(np.asarray(tile, F32), 0.7, mode="reflect")
    mean = ndi.uniform_filter(x, window, mode="reflect")
    std = np.sqrt(np.maximum(ndi.uniform_filter(x * x, window, mode="reflect") - mean * mean, 0))
    mask = ndi.binary_fill_holes(std > threshold)
    return ndi.binary_erosion(ndi.binary_opening(mask, iterations=2), iterations=window // 2)


def normalized_distance(labels: np.ndarray, *, erode: int = 0, touching: bool = True) -> np.ndarray:
    """Distance from each object's inner boundary ring, divided by the object's maximum.

    The ring (skimage `find_boundaries(mode="inner")`: pixels with a 4-neighbour of another
    label, background included) is zero, which also separates touching labels. `labels` may be
    a boolean mask (objects = connected components) or a label image; `touching=False` says no
    two labels touch, so the ring is a plain binary erosion (the same pixels, cheaper).
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels, _ = ndi.label(labels)
        touching = False
    if not labels.any():
        return np.zeros(labels.shape, F32)
    if touching:
        from skimage.segmentation import find_boundaries

        inside = (labels > 0) & ~find_boundaries(labels, mode="inner")
    else:
        inside = ndi.binary_erosion(labels > 0, border_value=1)
    if erode:
        inside = ndi.binary_erosion(inside, iterations=erode, border_value=1)
    dist = ndi.distance_transform_edt(inside).astype(F32)
    peak = np.zeros(int(labels.max()) + 1, F32)
    np.maximum.at(peak, labels.ravel(), dist.ravel())
    peak[peak == 0] = 1.0
    return (dist / peak[labels]).astype(F32)


def nuclear_heads(tile: np.ndarray, *, phase: bool = False, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(inner distance, outer distance) of one (H, W) tile, each (H, W, 1) float32 >= 0.

    Inner: per-object normalised distance, lightly smoothed, so h_maxima(h=0.1, disk(10)) finds one
    marker per blob at its centre (touching blobs keep separate peaks across the neck). Outer: the
    same with one more pixel eroded (zero on a 2 px inner ring), so after deep watershed's
    interior smoothing (sigma 1) the `> 0.01` mask lands on the object's own edge.
    """
    mask = contrast_mask(tile) if phase else foreground_mask(tile, threshold)
    labels, _ = ndi.label(mask)
    inner = ndi.gaussian_filter(normalized_distance(labels, touching=False), 1.0, mode="constant")
    outer = normalized_distance(labels, erode=1, touching=False)
    return inner[..., None].astype(F32), outer[..., None].astype(F32)


def grow_cells(nuclear: np.ndarray, membrane: np.ndarray, *, reach: int = 12,
               threshold: float = 0.35) -> np.ndarray:
    """Whole-cell labels: nuclei grown over membrane/cytoplasm signal, split along bright membranes.

    A seeded watershed on the smoothed membrane image (boundaries are ridges) from the nuclear
    labels, limited to pixels within `reach` px of a nucleus that carry signal in either channel.
    """
    from skimage.segmentation import watershed

    nuc_labels, count = ndi.label(foreground_mask(nuclear))
    if not count:
        return nuc_labels
    mem = ndi.gaussian_filter(np.asarray(membrane, F32), 1.0, mode="reflect")
    near = ndi.distance_transform_edt(nuc_labels == 0) <= reach
    signal = (mem > threshold) | (ndi.gaussian_filter(np.asarray(nuclear, F32), 1.0) > threshold)
    region = near & ndi.binary_erosion(ndi.binary_fill_holes(signal | (nuc_labels > 0)))
    return watershed(mem, nuc_labels, mask=region)


def pixelwise(labels: np.ndarray, edge_width: int = 2) -> np.ndarray:
    """(H, W, 3) softmax-like [edge, interior, background] of a label image (kiosk channel order).

    The edge is an `edge_width`-pixel inner ring of each object: Mesmer's deep watershed smooths
    the interior channel with sigma 2 and keeps > 0.2, which grows it by ~1.7 px, so this width
    puts the final label boundary back on the object's own edge.
    """
    from skimage.segmentation import find_boundaries

    inside = (labels > 0) & ~find_boundaries(labels, mode="inner")
    if edge_width > 1:
        inside = ndi.binary_erosion(inside, iterations=edge_width - 1)
    edge = (labels > 0) & ~inside
    onehot = np.stack([edge, inside, labels == 0], axis=-1).astype(F32)
    return (onehot * 0.9 + 0.1 / 3).astype(F32)


def mesmer_heads(tile: np.ndarray) -> list[np.ndarray]:
    """(H, W, 2) [nuclear, membrane] -> [cell inner (1), cell pixelwise (3), nuc inner (1), nuc pixelwise (3)]."""
    nuclear, membrane = tile[..., 0], tile[..., 1]
    nuc_labels, _ = ndi.label(foreground_mask(nuclear))
    cells = grow_cells(nuclear, membrane)
    out = []
    for labels in (cells, nuc_labels):
        inner = ndi.gaussian_filter(normalized_distance(labels), 1.0, mode="constant")
        out += [inner[..., None].astype(F32), pixelwise(labels)]
    return out


def spot_heads(tile: np.ndarray, *, min_snr: float = 6.0, min_height: float = 0.05,
               sigma: float = 1.0, reach: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) -> (classification (H, W, 2), offset_regression (H, W, 2)).

    Spots are local maxima of the Gaussian-smoothed tile that stand `min_snr` robust noise units
    (and `min_height`) above its median. Each centre is refined to sub-pixel precision by a
    3-point Gaussian (log-parabola) fit per axis. The peak pixel gets P(spot)=0.99, its
    neighbours fall off fast (so peak_local_max(min_distance=1, threshold 0.95) finds exactly one
    pixel per spot), and every pixel within `reach` px of a spot stores (d-row, d-col) to it.
    """
    x = np.asarray(tile, F32)
    h, w = x.shape
    smooth = ndi.gaussian_filter(x, sigma, mode="reflect")
    base = float(np.median(smooth))
    noise = 1.4826 * float(np.median(np.abs(smooth - base))) + 1e-6
    peaks = (smooth == ndi.maximum_filter(smooth, size=3, mode="nearest"))
    peaks &= smooth > base + max(min_snr * noise, min_height)
    peaks[[0, -1], :] = False
    peaks[:, [0, -1]] = False
    rows, cols = np.nonzero(peaks)
    lifted = np.log(np.maximum(smooth - base, 1e-6))

    def vertex(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        den = a - 2 * b + c
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
        return np.clip(off, -0.5, 0.5)

    centres = np.stack([rows + vertex(lifted[rows - 1, cols], lifted[rows, cols], lifted[rows + 1, cols]),
                        cols + vertex(lifted[rows, cols - 1], lifted[rows, cols], lifted[rows, cols + 1])],
                       axis=-1) if rows.size else np.zeros((0, 2))
    prob = np.zeros((h, w), F32)
    offsets = np.zeros((h, w, 2), F32)
    if rows.size:
        seeds = np.zeros((h, w), np.int32)
        seeds[rows, cols] = np.arange(1, rows.size + 1)
        dist, (ir, ic) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
        near = dist <= reach
        owner = seeds[ir, ic] - 1
        grid = np.mgrid[:h, :w].astype(F32)
        for k in range(2):
            offsets[..., k] = np.where(near, centres[owner, k] - grid[k], 0.0)
        prob = np.where(near, 0.99 * np.exp(-2.0 * dist ** 2), 0.0).astype(F32)
    cls = np.stack([1.0 - prob, prob], axis=-1).astype(F32)
    return cls, offsets
