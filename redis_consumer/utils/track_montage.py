"""A PNG a person can read a tracking result from: a row of frames, each cell outlined in its track's colour.

The same track keeps the same colour in every panel, so a cell can be followed by eye across the
movie; a daughter gets a line from its parent's last position to its own first one in the panel
of the division frame. Written once per caliban job (and by the demo), so it favours clarity over
speed: a few frames, nearest-neighbour scaling, no fonts.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .overlay import outlines

GAP = 4


def track_colour(label: int) -> tuple[int, int, int]:
    """A bright colour per track label (golden-angle hues, so neighbouring labels differ)."""
    import colorsys

    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def pick_frames(n_frames: int, most: int = 6) -> list[int]:
    """Up to `most` frame indices spread evenly from the first to the last."""
    if n_frames <= most:
        return list(range(n_frames))
    return sorted({round(i * (n_frames - 1) / (most - 1)) for i in range(most)})


def _grey(plane: np.ndarray) -> np.ndarray:
    plane = np.asarray(plane, dtype=np.float32)
    low, high = np.percentile(plane, (1, 99.8)) if plane.size else (0.0, 0.0)
    scaled = np.clip((plane - low) / max(float(high - low), 1e-6), 0, 1) * 200
    return np.repeat(scaled.astype(np.uint8)[..., None], 3, axis=-1)


def _centroids(labels: np.ndarray) -> dict[int, tuple[float, float]]:
    from scipy import ndimage

    ids = np.unique(labels[labels > 0])
    if not len(ids):
        return {}
    centres = ndimage.center_of_mass(np.ones(labels.shape), labels, ids)
    return {int(i): (float(r), float(c)) for i, (r, c) in zip(ids, centres)}


def _line(rgb: np.ndarray, a: tuple[float, float], b: tuple[float, float], colour: Sequence[int]) -> None:
    steps = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]))) + 1
    rows = np.clip(np.rint(np.linspace(a[0], b[0], steps)).astype(int), 0, rgb.shape[0] - 1)
    cols = np.clip(np.rint(np.linspace(a[1], b[1], steps)).astype(int), 0, rgb.shape[1] - 1)
    rgb[rows, cols] = colour


def render_frame(raw: np.ndarray, tracked: np.ndarray, t: int, tracks: Mapping[int, Mapping[str, Any]],
                 previous: np.ndarray | None = None) -> np.ndarray:
    """RGB (H, W, 3) of frame `t`: grey image, outlines in track colours, division lines in white."""
    rgb = _grey(raw)
    edges = outlines(tracked)
    labels = tracked[edges]
    palette = {int(v): track_colour(int(v)) for v in np.unique(labels)}
    if palette:
        lut = np.zeros((max(palette) + 1, 3), dtype=np.uint8)
        for v, colour in palette.items():
            lut[v] = colour
        rgb[edges] = lut[labels]
    if previous is not None:
        here, before = _centroids(tracked), _centroids(previous)
        for label, info in tracks.items():
            parent = info.get("parent")
            if parent is not None and info.get("frames") and info["frames"][0] == t and parent in before \
                    and int(label) in here:
                _line(rgb, before[parent], here[int(label)], (255, 255, 255))
    return rgb


def montage(raw: np.ndarray, tracked: np.ndarray, tracks: Mapping[int, Mapping[str, Any]],
            frames: Sequence[int] | None = None, most: int = 6) -> np.ndarray:
    """RGB panels of the chosen frames side by side, `GAP` dark pixels apart.

    `raw` (T, H, W[, 1]) frames, `tracked` (T, H, W[, 1]) track labels, `tracks` the lineage
    (label -> {frames, parent, ...}); division frames are always among the panels when `frames`
    is None and there is room."""
    raw = np.asarray(raw)
    tracked = np.asarray(tracked)
    raw = raw[..., 0] if raw.ndim == 4 else raw
    tracked = tracked[..., 0] if tracked.ndim == 4 else tracked
    n = tracked.shape[0]
    if frames is None:
        chosen = pick_frames(n, most)
        births = sorted({int(i["frames"][0]) for i in tracks.values() if i.get("parent") is not None and i.get("frames")})
        for t in births:
            if t not in chosen and len(chosen) < most + 2:
                chosen.append(t)
        frames = sorted(chosen)
    panels = [render_frame(raw[t], tracked[t], t, tracks, tracked[t - 1] if t > 0 else None) for t in frames]
    height, width = tracked.shape[1:3]
    sheet = np.full((height, len(panels) * (width + GAP) - GAP, 3), 20, dtype=np.uint8)
    for i, panel in enumerate(panels):
        sheet[:, i * (width + GAP):i * (width + GAP) + width] = panel
    return sheet


def montage_png(raw: np.ndarray, tracked: np.ndarray, tracks: Mapping[int, Mapping[str, Any]], most: int = 6) -> bytes:
    """PNG bytes of `montage`."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(montage(raw, tracked, tracks, most=most), mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
