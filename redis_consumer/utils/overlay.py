"""A PNG a person can look at: object outlines drawn over the (first channel of the) input."""

from __future__ import annotations

import numpy as np

OUTLINE_RGB = (255, 40, 40)


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels on an object's edge (label differs from a 4-neighbour)."""
    edge = np.zeros(labels.shape, dtype=bool)
    diff_y = labels[1:, :] != labels[:-1, :]
    diff_x = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= diff_y
    edge[:-1, :] |= diff_y
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    return edge & (labels > 0)


def render(plane01: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3): grey input scaled from [0, 1], outlines in red."""
    grey = (np.clip(plane01, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    rgb[outlines(labels)] = OUTLINE_RGB
    return rgb


def save_png(path: str, plane01: np.ndarray, labels: np.ndarray) -> str:
    """Write the overlay PNG (fast compression: it is for eyes, not archives)."""
    from PIL import Image

    Image.fromarray(render(plane01, labels), mode="RGB").save(path, format="PNG", compress_level=1)
    return path
