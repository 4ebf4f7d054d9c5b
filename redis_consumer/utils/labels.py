"""Turn a model's output into a label image: normalise in, threshold and split objects out.

Kept cheap on purpose (the worker's CPU budget is ~50 ms per 1024x1024 image): percentiles are
taken on a strided sample, connected components come from scipy, and the distance-transform
split of touching objects only runs on the few components much larger than a typical one.
"""

from __future__ import annotations

import numpy as np

from . import quantiles

_EIGHT = np.ones((3, 3), dtype=bool)


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.9,
              bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Per frame and channel, map the [low, high] percentiles to [0, 1] (float32, clipped).

    Input is (frames, height, width, channels). `bounds`, when given, are those percentiles
    (np.percentile's values for a (low, high) pair), taken elsewhere.
    """
    out = np.empty(image.shape, dtype=np.float32)
    for f in range(image.shape[0]):
        for c in range(image.shape[-1]):
            plane = image[f, :, :, c]
            step = max(1, int(np.sqrt(plane.size / 65536)))
            sample = plane[::step, ::step].astype(np.float32, copy=False)
            lo, hi = quantiles.percentiles(sample.flatten(), (low, high), overwrite_input=True) \
                if bounds is None else bounds  # np.percentile's values by one partition each
            if not np.isfinite(lo) or not np.isfinite(hi):
                lo, hi = float(np.nanmin(sample)), float(np.nanmax(sample))
            scale = 1.0 / (hi - lo) if hi > lo else 0.0
            target = out[f, :, :, c]
            np.subtract(plane, lo, out=target, casting="unsafe")
            target *= scale
            np.clip(target, 0.0, 1.0, out=target)
    return out


def foreground(prediction: np.ndarray) -> np.ndarray:
    """Foreground probability (frames, height, width) from a model output (frames, H, W, C).

    One channel: it is the probability. Two or more: the last channel is taken as foreground
    (background-first convention of semantic heads), scaled to [0, 1] if needed.
    """
    if prediction.ndim == 3:
        prediction = prediction[..., np.newaxis]
    fg = prediction[..., -1] if prediction.shape[-1] > 1 else prediction[..., 0]
    fg = np.asarray(fg, dtype=np.float32)
    hi = float(fg.max()) if fg.size else 0.0
    lo = float(fg.min()) if fg.size else 0.0
    if hi > 1.0 or lo < 0.0:
        fg = (fg - lo) / (hi - lo) if hi > lo else np.zeros_like(fg)
    return fg


def _split_large(labels: np.ndarray, count: int, min_distance: int, areas: np.ndarray) -> tuple[np.ndarray, int]:
    """Split components that are much larger than the median one (touching objects).

    `areas[i]` is the pixel count of label i + 1. Each candidate is cut between the peaks of its
    distance map that are separated by a real neck (see `_peak_groups`); pixels go to the nearest
    peak, so every part reaches the object's outline (no core-and-ring artefacts).
    """
    if count < 1:
        return labels, count
    from scipy import ndimage  # lazy: scipy costs ~0.3 s at worker start

    median = float(np.median(areas))
    few = count <= 32  # with few objects the median says little: check each one's shape
    big = [i + 1 for i, a in enumerate(areas) if (few or a > 1.8 * median) and a > 4 * min_distance**2]
    if not big:
        return labels, count
    slices = ndimage.find_objects(labels)
    next_label = count
    for lab in big:
        sl = slices[lab - 1]
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        mask = labels[sl] == lab
        dist = ndimage.distance_transform_edt(mask)
        if mask.sum() < 1.5 * np.pi * float(dist.max()) ** 2:
            continue  # round enough to be one object
        peaks = (dist == ndimage.maximum_filter(dist, size=2 * min_distance + 1)) & (dist >= min_distance)
        markers, n = ndimage.label(peaks, structure=_EIGHT)
        if n < 2:
            continue
        groups = _peak_groups(markers, n, dist)
        if groups.max() < 2:
            continue
        # every object pixel joins the group of its nearest peak pixel
        _, (iy, ix) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        parts = groups[markers[iy, ix]]
        region = labels[sl]
        for g in range(2, int(groups.max()) + 1):
            next_label += 1
            region[mask & (parts == g)] = next_label
    return labels, next_label


def _peak_groups(markers: np.ndarray, n: int, dist: np.ndarray, neck: float = 0.75) -> np.ndarray:
    """Group peaks 1..n: two peaks are one object unless the distance map dips between them.

    Returns an array mapping marker id (index) to group 1..k (index 0 maps to 0).
    """
    from scipy import ndimage

    ids = np.arange(1, n + 1)
    centres = np.array(ndimage.center_of_mass(markers > 0, markers, ids))
    heights = np.asarray(ndimage.maximum(dist, markers, ids), dtype=float)
    parent = list(range(n + 1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(n):
        for b in range(a + 1, n):
            steps = int(np.hypot(*(centres[a] - centres[b]))) * 2 + 2
            ys = np.linspace(centres[a][0], centres[b][0], steps).round().astype(int)
            xs = np.linspace(centres[a][1], centres[b][1], steps).round().astype(int)
            if dist[ys, xs].min() >= neck * min(heights[a], heights[b]):
                parent[root(a + 1)] = root(b + 1)
    roots = sorted({root(i) for i in ids})
    number = {r: k + 1 for k, r in enumerate(roots)}
    return np.array([0] + [number[root(i)] for i in ids], dtype=np.int32)


def _renumber(keep: np.ndarray, dtype: np.typing.DTypeLike) -> np.ndarray:
    """Lookup table mapping label i to its rank among the kept labels (1..n), dropped ones to 0."""
    return (np.cumsum(keep) * keep).astype(dtype)


def label_objects(prob: np.ndarray, threshold: float = 0.5, min_size: int = 9, min_distance: int = 3) -> np.ndarray:
    """A label image (frames, H, W) int32: 0 = background, 1..n one object each per frame."""
    from scipy import ndimage

    out = np.zeros(prob.shape, dtype=np.int32)
    for f in range(prob.shape[0]):
        mask = prob[f] > threshold
        labels, count = ndimage.label(mask, structure=_EIGHT)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        keep = sizes >= max(min_size, 1)
        keep[0] = False
        if count and not keep[1:].all():
            # one lookup drops the specks and renumbers the rest 1..n without gaps
            remap = _renumber(keep, np.int32)
            count = int(remap.max())
            labels = np.take(remap, labels)
        labels, count = _split_large(labels, count, min_distance, sizes[keep])
        out[f] = labels
    return out


def resize_nearest(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Labels (frames, h, w) resized to (frames, height, width) by nearest neighbour, renumbered 1..n."""
    rows = np.minimum((np.arange(height) + 0.5) * labels.shape[1] / height, labels.shape[1] - 1).astype(np.intp)
    cols = np.minimum((np.arange(width) + 0.5) * labels.shape[2] / width, labels.shape[2] - 1).astype(np.intp)
    out = labels[:, rows][:, :, cols]
    for f in range(out.shape[0]):  # objects too small to survive the resize leave gaps: close them
        present = np.unique(out[f])
        present = present[present > 0]
        if present.size and present[-1] != present.size:
            keep = np.zeros(int(present[-1]) + 1, dtype=bool)
            keep[present] = True
            out[f] = _renumber(keep, out.dtype)[out[f]]
    return out


def count_objects(labels: np.ndarray) -> list[int]:
    """Number of objects per frame (`label_objects` numbers them 1..n without gaps)."""
    return [int(frame.max()) if frame.size else 0 for frame in labels]


def compact_type(labels: np.ndarray) -> np.dtype:
    """The smallest unsigned dtype that holds the labels (uint16 almost always)."""
    top = int(labels.max()) if labels.size else 0
    return np.dtype(np.uint16 if top < 1 << 16 else np.uint32)


def compact_dtype(labels: np.ndarray) -> np.ndarray:
    """The labels in `compact_type(labels)` (a copy)."""
    return labels.astype(compact_type(labels))
