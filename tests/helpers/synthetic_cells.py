"""Synthetic ground truth for the spot and tracking tests and benches.

* `spot_image`: Gaussian spots at known sub-pixel positions, and the two heads a perfect spot
  model would give for them (P(spot) peaking at the spot's pixel, offsets to the true centre).
* `nuclei_movie`: drifting disk nuclei with optional divisions and one cell that leaves the
  field, per-frame labels shuffled (so label numbers carry no identity), and the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def spot_positions(n: int, size: int, rng: np.random.Generator, margin: float = 3.0, spacing: float = 4.0) -> np.ndarray:
    """(n, 2) sub-pixel [row, col] at least `spacing` apart and `margin` from the edges."""
    points = np.zeros((n, 2))
    count = 0
    while count < n:
        p = rng.uniform(margin, size - 1 - margin, 2)
        if count == 0 or np.min(np.hypot(*(points[:count] - p).T)) >= spacing:
            points[count] = p
            count += 1
    return points


def spot_image(
    truth: np.ndarray, size: int, rng: np.random.Generator, sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W) float32, classification (H, W, 2), offset_regression (H, W, 2)).

    The heads are what a perfect model outputs: P(spot) = exp(-d^2 / 2) around the pixel that holds
    each spot (1 there), small noise elsewhere; offsets point from each pixel to its nearest spot
    with 0.1 px noise.
    """
    from scipy.spatial import cKDTree

    image = rng.normal(10.0, 1.0, (size, size))
    reach = int(np.ceil(4 * sigma))
    for r, c in truth:
        r0, c0 = max(int(r) - reach, 0), max(int(c) - reach, 0)
        rr, cc = np.mgrid[r0 : min(int(r) + reach + 1, size), c0 : min(int(c) + reach + 1, size)]
        image[rr, cc] += 100.0 * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * sigma**2))
    pixels = np.stack(np.mgrid[:size, :size], axis=-1).reshape(-1, 2).astype(np.float64)
    _, nearest = cKDTree(truth).query(pixels)
    offsets = (truth[nearest] - pixels).reshape(size, size, 2)
    d_peak, _ = cKDTree(np.floor(truth + 0.5)).query(pixels)
    prob = np.exp(-(d_peak.reshape(size, size) ** 2) / 2.0)
    prob = np.clip(prob - rng.uniform(0, 0.03, prob.shape), 0, 1)
    classification = np.stack([1 - prob, prob], axis=-1).astype(np.float32)
    offsets += rng.normal(0, 0.1, offsets.shape)
    return image.astype(np.float32), classification, offsets.astype(np.float32)


@dataclass
class Nucleus:
    """One true object: its frames, centres (row, col) per frame, radius and family."""

    ident: int
    frames: list[int]
    centres: list[np.ndarray]
    radius: float
    parent: int | None = None
    children: list[int] = field(default_factory=list)


@dataclass
class Movie:
    X: np.ndarray  # (T, H, W) float32
    y: np.ndarray  # (T, H, W) uint16, labels shuffled per frame
    truth: list[dict[int, int]]  # per frame: label -> nucleus ident
    nuclei: dict[int, Nucleus]


def nuclei_movie(
    n_frames: int = 12,
    size: int = 160,
    grid: int = 4,
    radius: float = 7.0,
    divide: list[tuple[int, int]] | None = None,
    leave: int | None = None,
    leave_frame: int = 4,
    seed: int = 0,
    split: float = 0.75,
) -> Movie:
    """`grid` x `grid` nuclei 36 px apart drifting together (a slow loop of a few px plus per-cell
    jitter). `divide` = [(nucleus, frame)]: that nucleus is replaced at `frame` by two of half its
    area, side by side, moving apart slowly. `leave`: that nucleus runs right at 12 px/frame so its
    last (partly clipped) frame is `leave_frame`. `split`: each daughter starts `split` x radius
    from the parent's centre (0.75: touching halves; ~1.2 leaves a gap a segmentation model sees).
    """
    rng = np.random.default_rng(seed)
    spacing = 36.0
    start = (size - spacing * (grid - 1)) / 2
    nuclei: dict[int, Nucleus] = {}
    jitter_phase = rng.uniform(0, 2 * np.pi, (grid * grid, 2))

    def drift(t: float, k: int) -> np.ndarray:
        common = np.array([3.0 * np.sin(t / 5.0), 3.0 * np.cos(t / 7.0) - 3.0])
        return common + 0.5 * np.sin(t / 3.0 + jitter_phase[k % len(jitter_phase)])

    divisions = dict(divide or [])
    next_ident = grid * grid
    for k in range(grid * grid):
        base = np.array([start + spacing * (k // grid), start + spacing * (k % grid)])
        frames, centres = [], []
        for t in range(n_frames):
            if k in divisions and t >= divisions[k]:
                break
            centre = base + drift(t, k)
            if k == leave:
                # stays on its spot, then runs so that frame `leave_frame` has its centre 2 px
                # inside the right edge; gone the frame after
                centre[1] = max(centre[1], size - 3.0 - 12.0 * (leave_frame - t))
                if centre[1] - radius > size - 1:
                    break
            frames.append(t)
            centres.append(centre)
        nuclei[k] = Nucleus(k, frames, centres, radius)
        if k in divisions:
            t0 = divisions[k]
            for side in (-1, 1):
                ident = next_ident
                next_ident += 1
                d_frames = list(range(t0, n_frames))
                d_centres = [
                    base + drift(t, k) + np.array([0.0, side * (radius * split + 0.6 * (t - t0))]) for t in d_frames
                ]
                nuclei[ident] = Nucleus(ident, d_frames, d_centres, radius / np.sqrt(2), parent=k)
                nuclei[k].children.append(ident)

    rows, cols = np.mgrid[:size, :size].astype(np.float64)
    X = rng.normal(100.0, 8.0, (n_frames, size, size)).astype(np.float32)
    y = np.zeros((n_frames, size, size), dtype=np.uint16)
    truth: list[dict[int, int]] = []
    for t in range(n_frames):
        present = [n for n in nuclei.values() if t in n.frames]
        labels = rng.permutation(len(present)) + 1
        frame_truth = {}
        for n, label in zip(present, labels):
            r, c = n.centres[n.frames.index(t)]
            disk = (rows - r) ** 2 + (cols - c) ** 2 <= n.radius**2
            if not disk.any():
                continue
            y[t][disk] = label
            X[t][disk] += 900.0 + 150.0 * np.cos((rows[disk] - r) / 2.0) * np.sin((cols[disk] - c) / 3.0)
            frame_truth[int(label)] = n.ident
        truth.append(frame_truth)
    return Movie(X, y, truth, nuclei)
