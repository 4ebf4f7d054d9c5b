"""Synthetic fluorescence images of nuclei: bright blurred ellipses on a dim, noisy background.

Deterministic for a seed, so the demo shows the same pictures every run. The true nucleus
count of each image is returned for the summary (the segmentation should find roughly that).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def nuclei_image(rng: np.random.Generator, size: int = 256, count: int | None = None) -> tuple[np.ndarray, int]:
    """One uint16 image (size x size) and how many nuclei it holds."""
    from scipy import ndimage

    count = int(rng.integers(8, 20)) if count is None else count
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.zeros((size, size), dtype=np.float32)
    centres: list[tuple[float, float]] = []
    placed = 0
    for _ in range(count * 20):
        if placed == count:
            break
        ry, rx = rng.uniform(6, 13, size=2)
        cy, cx = rng.uniform(16, size - 16, size=2)
        if any((cy - py) ** 2 + (cx - px) ** 2 < (max(ry, rx) + 10) ** 2 for py, px in centres):
            continue  # keep nuclei apart so the count is well defined
        angle = rng.uniform(0, np.pi)
        cos, sin = np.cos(angle), np.sin(angle)
        dy, dx = yy - cy, xx - cx
        u, v = dy * cos + dx * sin, -dy * sin + dx * cos
        inside = (u / ry) ** 2 + (v / rx) ** 2 <= 1.0
        image[inside] = rng.uniform(0.5, 1.0)
        centres.append((cy, cx))
        placed += 1
    image = ndimage.gaussian_filter(image, sigma=1.5)
    image = 200.0 + 3000.0 * image  # dim background, bright nuclei
    noisy = rng.poisson(image).astype(np.float32) + rng.normal(0, 20, image.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), placed


def write_images(folder: Path, n: int, seed: int = 7, size: int = 256, prefix: str = "nuclei") -> dict[Path, int]:
    """`n` TIFF files in `folder`; returns path -> true nucleus count."""
    return _write_tiffs(folder, n, seed, size, prefix, nuclei_image)


def _write_tiffs(folder: Path, n: int, seed: int, size: int, prefix: str,
                 make: Callable[[np.random.Generator, int], tuple[np.ndarray, int]]) -> dict[Path, int]:
    """`n` TIFFs `{prefix}_NN.tif` drawn by `make(rng, size)`; returns path -> true object count."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: dict[Path, int] = {}
    for i in range(n):
        data, count = make(rng, size)
        path = folder / f"{prefix}_{i:02d}.tif"
        tifffile.imwrite(path, data)
        made[path] = count
    return made


def cells_image(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, int]:
    """(size, size, 2) uint16 [nuclear, membrane] and the cell count: nuclei as above, each with a
    membrane ring 4-7 pixels outside it (what the mesmer job segments)."""
    from scipy import ndimage

    nuclear, count = nuclei_image(rng, size)
    mask = ndimage.gaussian_filter(nuclear.astype(np.float32), 1.5) > 1000
    dist = ndimage.distance_transform_edt(~mask)
    ring = ndimage.gaussian_filter(((dist > 4) & (dist <= 7)).astype(np.float32), 1.0)
    membrane = rng.poisson(200.0 + 2500.0 * ring).astype(np.float32) + rng.normal(0, 20, ring.shape)
    image = np.stack([nuclear.astype(np.float32), membrane], axis=-1)
    return np.clip(image, 0, 65535).astype(np.uint16), count


def write_cells(folder: Path, n: int, seed: int = 7, size: int = 256, prefix: str = "tissue") -> dict[Path, int]:
    """`n` two-channel (H, W, 2) TIFFs for mesmer jobs; returns path -> true cell count."""
    return _write_tiffs(folder, n, seed, size, prefix, cells_image)


def write_zip(path: Path, images: list[Path]) -> Path:
    """A zip archive of `images` (one folder level, like a user's upload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for image in images:
            zf.write(image, f"batch/{image.name}")
    return path


# -- the kiosk's other job types: an image of spots (polaris) and a short movie (caliban) ------------
def spots_image(rng: np.random.Generator, size: int = 256, cells: int = 6,
                spots_per_cell: int = 8) -> tuple[np.ndarray, int]:
    """(size, size, 2) uint16 [spots, nuclei] and the number of spots: Gaussian spots (sigma 1 px,
    sub-pixel centres) mostly inside round nuclei, a few outside, over camera noise."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    nuclei = np.zeros((size, size), dtype=np.float32)
    centres: list[tuple[float, float, float]] = []
    for _ in range(cells * 30):
        if len(centres) == cells:
            break
        radius = float(rng.uniform(18, 26))
        cy, cx = rng.uniform(radius + 4, size - radius - 4, size=2)
        if all((cy - py) ** 2 + (cx - px) ** 2 > (radius + pr + 8) ** 2 for py, px, pr in centres):
            centres.append((float(cy), float(cx), radius))
            nuclei[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1.0
    points: list[tuple[float, float]] = []
    for cy, cx, radius in centres:
        for _ in range(spots_per_cell):
            r, a = radius * 0.7 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            points.append((cy + r * np.sin(a), cx + r * np.cos(a)))
    points += [tuple(rng.uniform(6, size - 6, size=2)) for _ in range(cells)]
    spots = np.zeros((size, size), dtype=np.float32)
    kept: list[tuple[float, float]] = []
    for r, c in points:
        if all((r - pr) ** 2 + (c - pc) ** 2 >= 16 for pr, pc in kept):  # 4 px apart
            kept.append((r, c))
            spots += np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 2.0)
    spots = 300.0 + 3000.0 * spots + rng.normal(0, 30, spots.shape)
    nuclei = 200.0 + 2500.0 * ndimage.gaussian_filter(nuclei, 1.5) + rng.normal(0, 20, nuclei.shape)
    image = np.stack([spots, nuclei], axis=-1)
    return np.clip(image, 0, 65535).astype(np.uint16), len(kept)


def division_movie(rng: np.random.Generator, frames: int = 10, size: int = 160, divide_at: int = 5) -> np.ndarray:
    """(frames, size, size) uint16: a 3x3 grid of nuclei drifting together; the centre one divides
    at `divide_at` into two halves that move apart."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    movie = rng.normal(150.0, 10.0, (frames, size, size)).astype(np.float32)
    spacing = size / 3.5
    start = (size - 2 * spacing) / 2
    for t in range(frames):
        shift = np.array([3.0 * np.sin(t / 4.0), 2.0 * t / max(frames - 1, 1) * 3.0])
        for k in range(9):
            centre = np.array([start + spacing * (k // 3), start + spacing * (k % 3)]) + shift
            if k == 4 and t >= divide_at:
                offset = 9.0 + 0.8 * (t - divide_at)
                parts = [(centre + [0, -offset], 5.5), (centre + [0, offset], 5.5)]
            else:
                parts = [(centre, 8.0)]
            for (cy, cx), radius in parts:
                movie[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] += 1500.0
    return np.clip(movie, 0, 65535).astype(np.uint16)


def write_kiosk_inputs(folder: Path, seed: int = 7, size: int = 256) -> dict[str, Path]:
    """One polaris image and one caliban movie as TIFFs: {"polaris": path, "caliban": path}."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    spots, _count = spots_image(rng, size)
    paths = {"polaris": folder / "spots.tif", "caliban": folder / "movie.tif"}
    tifffile.imwrite(paths["polaris"], spots)
    tifffile.imwrite(paths["caliban"], division_movie(rng))
    return paths
