"""Synthetic ground truth for the deepcell tests: touching discs with known centres and radii,
the model heads a perfect network would output for them, and a matching score."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def touching_nuclei(shape=(160, 200), seed=0, rmin=9.0, rmax=14.0, squeeze=0.85):
    """Pairs of discs whose centres are `squeeze` x (r1 + r2) apart (so they touch/overlap);
    where two overlap, the earlier disc keeps the pixel. Returns (labels, centres, radii)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    centres, radii = [], []
    xx, yy = np.mgrid[:shape[0], :shape[1]]
    for gx in range(30, shape[0] - 20, 50):
        for gy in range(30, shape[1] - 20, 60):
            r1, r2 = rng.uniform(rmin, rmax, 2)
            angle = rng.uniform(0, np.pi)
            c1 = np.array([gx, gy], float)
            c2 = c1 + squeeze * (r1 + r2) * np.array([np.cos(angle), np.sin(angle)])
            for c, r in ((c1, r1), (c2, r2)):
                if not (r <= c[0] < shape[0] - r and r <= c[1] < shape[1] - r):
                    continue
                disc = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= r * r
                truth[disc & (truth == 0)] = len(centres) + 1
                centres.append(c)
                radii.append(r)
    return truth, centres, radii


def heads_from_truth(truth):
    """(inner, outer) distance heads: per-object distance to the edge, the inner one
    normalised to a peak of 1 (float32, like a ReLU head)."""
    inner = np.zeros(truth.shape, np.float32)
    outer = np.zeros(truth.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(truth), 1):
        if sl is None:
            continue
        own = truth[sl] == i
        dist = ndi.distance_transform_edt(np.pad(own, 1))[1:-1, 1:-1]
        inner[sl][own] = dist[own] / dist.max()
        outer[sl][own] = dist[own]
    return inner, outer


def matched_ious(truth, labels):
    """Per true object, IoU with the predicted label covering most of it."""
    ious = []
    for i in range(1, int(truth.max()) + 1):
        t = truth == i
        ids, counts = np.unique(labels[t], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if not ids.size:
            ious.append(0.0)
            continue
        p = labels == ids[counts.argmax()]
        ious.append(float((t & p).sum() / (t | p).sum()))
    return np.array(ious)
