"""Per-cell tracking features, as deepcell-tracking 0.6.4 computes them for its models.

Sources (vanvalenlab/deepcell-tracking, tag 0.6.4 = 0adc52d, unless noted):
* `clean_up_annotations`: deepcell_tracking/utils.py:51-85.
* `get_max_cells`: utils.py:204-220.
* `image_features`: `get_image_features`, utils.py:412-512 (0.6.5 adds a float32 cast and an
  epsilon in the fixed-crop z-score: `git diff 0.6.4 0.6.5 -- deepcell_tracking/utils.py`).
* `movie_features`: `CellTracker._est_feats`, deepcell_tracking/tracking.py:197-243, with
  `normalize_adj_matrix`, utils.py:223-262.
The appearance resize is deepcell-toolbox's `resize` (deepcell_toolbox/utils.py:68-148 at
0.12.1): OpenCV `INTER_LINEAR` for one channel, skimage order-1 anti-aliased otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from skimage.measure import regionprops


def _frames_last_axis(y: np.ndarray) -> np.ndarray:
    """(T, H, W) or (T, H, W, 1) -> (T, H, W) view."""
    y = np.asarray(y)
    if y.ndim == 4 and y.shape[-1] == 1:
        return y[..., 0]
    if y.ndim != 3:
        raise ValueError(f"label movies must be (frames, height, width[, 1]); got shape {y.shape}")
    return y


def clean_up_annotations(y: np.ndarray) -> np.ndarray:
    """int32 labels made unique across the movie, same shape as `y`.

    Numbering starts at (total cells over all frames) + 1 and runs frame by frame in ascending
    label order (utils.py:63-85), so every new id is larger than any track label the tracker will
    hand out (at most one track per cell instance), and relabelling never collides.
    """
    y = np.asarray(y)
    frames = _frames_last_axis(y)
    out = np.zeros(frames.shape, dtype=np.int32)
    uniques = []
    for t in range(frames.shape[0]):
        values, inverse = np.unique(frames[t], return_inverse=True)
        uniques.append((values, inverse.reshape(frames.shape[1:])))
    next_id = sum(int(np.count_nonzero(v)) for v, _ in uniques) + 1
    for t, (values, inverse) in enumerate(uniques):
        lut = np.zeros(len(values), dtype=np.int32)
        cells = values != 0
        lut[cells] = np.arange(next_id, next_id + int(cells.sum()), dtype=np.int32)
        next_id += int(cells.sum())
        out[t] = lut[inverse]
    return out.reshape(y.shape)


def get_max_cells(y: np.ndarray) -> int:
    """The largest number of labelled cells in any frame (utils.py:204-220)."""
    frames = _frames_last_axis(y)
    return max((int(np.count_nonzero(np.unique(f))) for f in frames), default=0)


def _linear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of OpenCV INTER_LINEAR along one axis (half-pixel centres,
    edge replicate: src = (dst + 0.5) * n_in / n_out - 0.5 clamped to [0, n_in - 1])."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    low = np.floor(src).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    return low, high, (src - low).astype(np.float32)


def resize_crop(crop: np.ndarray, dim: int) -> np.ndarray:
    """Resize an (h, w, C) crop to (dim, dim, C) float32 the way deepcell-toolbox's `resize` does.

    One channel: bilinear with OpenCV's INTER_LINEAR geometry (no anti-aliasing), in numpy
    (cv2 itself is not a dependency; values agree to float32 rounding). Several channels:
    skimage `resize(order=1, anti_aliasing=True, mode='constant', preserve_range=True)`
    (toolbox utils.py:107-121).
    """
    crop = np.asarray(crop, dtype=np.float32)
    if crop.shape[-1] > 1:
        from skimage.transform import resize

        return resize(
            crop, (dim, dim, crop.shape[-1]), order=1, mode="constant", preserve_range=True, anti_aliasing=True
        ).astype(np.float32)
    r0, r1, wr = _linear_axis(crop.shape[0], dim)
    c0, c1, wc = _linear_axis(crop.shape[1], dim)
    plane = crop[..., 0]
    rows = plane[r0] * (1 - wr)[:, None] + plane[r1] * wr[:, None]
    out = rows[:, c0] * (1 - wc)[None, :] + rows[:, c1] * wc[None, :]
    return out[..., None].astype(np.float32)


@dataclass
class FrameFeatures:
    """Features of one frame's cells, rows in ascending label order."""

    labels: np.ndarray  # (n,) int32
    centroids: np.ndarray  # (n, 2) float32 (row, col); padded coordinates in 'fixed' mode
    morphologies: np.ndarray  # (n, 3) float32 [area, perimeter, eccentricity]
    appearances: np.ndarray  # (n, A, A, C) float32


def image_features(
    X: np.ndarray,
    y: np.ndarray,
    appearance_dim: int = 32,
    crop_mode: str = "resize",
    norm: bool = True,
    norm_epsilon: float = 0.0,
) -> FrameFeatures:
    """`get_image_features` for one frame: X (H, W, C), y (H, W[, 1]) int labels.

    'resize': the cell's bbox crop of X resized to A x A (utils.py:475-481). 'fixed': X and y are
    zero-padded by A, the crop is A x A around int(centroid) +- A//2 in padded coordinates (the
    returned centroids are padded ones too), and with `norm` the crop is masked to the cell and its
    non-zero pixels z-scored (utils.py:444-505). `norm_epsilon` is added to that std: 0.0 is 0.6.4
    (a flat cell then gives NaN, as the library does), 1e-4 is 0.6.5. X is cast to float32 first
    (0.6.5; the kiosk's X is float32 anyway). Cells come from the labels present, not from
    `len(unique) - 1` (the library assumes some background pixel, utils.py:437).
    """
    if crop_mode not in ("resize", "fixed"):
        raise ValueError(f"crop_mode must be 'resize' or 'fixed'; got {crop_mode!r}")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim == 2:
        X = X[..., None]
    y = np.asarray(y)
    y = (y[..., 0] if y.ndim == 3 else y).astype(np.int32)
    dim = int(appearance_dim)
    if crop_mode == "fixed":
        X = np.pad(X, ((dim, dim), (dim, dim), (0, 0)))
        y = np.pad(y, ((dim, dim), (dim, dim)))
    props = regionprops(y, cache=True)  # the library passes cache=False; same values, fewer recomputations
    n = len(props)
    labels = np.zeros((n,), dtype=np.int32)
    centroids = np.zeros((n, 2), dtype=np.float32)
    morphologies = np.zeros((n, 3), dtype=np.float32)
    appearances = np.zeros((n, dim, dim, X.shape[-1]), dtype=np.float32)
    half = dim // 2
    for i, prop in enumerate(props):
        labels[i] = prop.label
        centroids[i] = prop.centroid
        morphologies[i] = (prop.area, prop.perimeter, prop.eccentricity)
        if crop_mode == "resize":
            minr, minc, maxr, maxc = prop.bbox
            appearances[i] = resize_crop(X[minr:maxr, minc:maxc, :], dim)
            continue
        r, c = int(prop.centroid[0]), int(prop.centroid[1])
        app = X[r - half : r + half, c - half : c + half, :].copy()
        if norm:
            app *= (y[r - half : r + half, c - half : c + half] == prop.label)[..., None]
            nonzero = app != 0
            if nonzero.any():
                values = app[nonzero]
                with np.errstate(divide="ignore", invalid="ignore"):
                    app[nonzero] = (values - values.mean()) / (values.std() + norm_epsilon)
        appearances[i] = app
    return FrameFeatures(labels, centroids, morphologies, appearances)


def adjacency(centroids: np.ndarray, distance_threshold: float) -> np.ndarray:
    """(T, M, M) float32 of `cdist(cent_t, cent_t) < distance_threshold` over ALL M rows: the
    zero-padded rows sit at (0, 0) and count as neighbours of each other and of any cell near the
    origin, as in the library (tracking.py:236-238)."""
    centroids = np.asarray(centroids)
    out = np.zeros((centroids.shape[0], centroids.shape[1], centroids.shape[1]), dtype=np.float32)
    for t in range(centroids.shape[0]):
        out[t] = cdist(centroids[t], centroids[t], metric="euclidean") < distance_threshold
    return out


def normalize_adjacency(adj: np.ndarray, epsilon: float = 1e-5) -> np.ndarray:
    """D^-1/2 A D^-1/2 per frame with D = row sums + epsilon (utils.py:223-262), float32."""
    adj = np.asarray(adj, dtype=np.float32)
    scale = (adj.sum(axis=-1) + epsilon) ** -0.5
    return (scale[..., :, None] * adj * scale[..., None, :]).astype(np.float32)


@dataclass
class MovieFeatures:
    """The neighbourhood encoder's four inputs plus the label of each row (0 = padding)."""

    appearances: np.ndarray  # (T, M, A, A, C)
    morphologies: np.ndarray  # (T, M, 3)
    centroids: np.ndarray  # (T, M, 2)
    adjacency: np.ndarray  # (T, M, M), normalised
    labels: list[np.ndarray]  # per frame, (n_t,) int32 ascending


def movie_features(
    X: np.ndarray,
    y: np.ndarray,
    appearance_dim: int = 32,
    crop_mode: str = "resize",
    norm: bool = True,
    distance_threshold: float = 64,
    norm_epsilon: float = 0.0,
) -> MovieFeatures:
    """`_est_feats` (tracking.py:197-243): X (T, H, W, C), y (T, H, W[, 1]) cleaned labels ->
    zero-padded (to `get_max_cells`) features of every frame and the normalised adjacency."""
    X = np.asarray(X)
    if X.ndim == 3:
        X = X[..., None]
    frames = _frames_last_axis(y)
    if X.shape[:3] != frames.shape:
        raise ValueError(f"image movie {X.shape} and label movie {np.shape(y)} differ in frames or size")
    n_frames, channels, dim = X.shape[0], X.shape[-1], int(appearance_dim)
    per_frame = [image_features(X[t], frames[t], dim, crop_mode, norm, norm_epsilon) for t in range(n_frames)]
    max_cells = max((len(f.labels) for f in per_frame), default=0)
    appearances = np.zeros((n_frames, max_cells, dim, dim, channels), dtype=np.float32)
    morphologies = np.zeros((n_frames, max_cells, 3), dtype=np.float32)
    centroids = np.zeros((n_frames, max_cells, 2), dtype=np.float32)
    for t, f in enumerate(per_frame):
        n = len(f.labels)
        appearances[t, :n] = f.appearances
        morphologies[t, :n] = f.morphologies
        centroids[t, :n] = f.centroids
    adj = normalize_adjacency(adjacency(centroids, distance_threshold))
    return MovieFeatures(appearances, morphologies, centroids, adj, [f.labels for f in per_frame])
