"""Synthetic fluorescence images of nuclei: bright blurred ellipses on a dim, noisy background.

Deterministic for a seed, so the demo shows the same pictures every run. The true nucleus
count of each image is returned for the summary (the segmentation should find roughly that).
"""

from __future__ import annotations

import zipfile
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
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: dict[Path, int] = {}
    for i in range(n):
        data, count = nuclei_image(rng, size)
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
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    made: dict[Path, int] = {}
    for i in range(n):
        data, count = cells_image(rng, size)
        path = folder / f"{prefix}_{i:02d}.tif"
        tifffile.imwrite(path, data)
        made[path] = count
    return made


def write_zip(path: Path, images: list[Path]) -> Path:
    """A zip archive of `images` (one folder level, like a user's upload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for image in images:
            zf.write(image, f"batch/{image.name}")
    return path
