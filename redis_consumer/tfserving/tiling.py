"""Cut large images into overlapping tiles of the model's input size, predict, stitch.

Tiles start every `tile - overlap` pixels, the last one flush with the edge; each output pixel is
taken from the tile in which it lies farthest from a cut (the seam sits in the middle of each
overlap), so a model with a limited receptive field gives the same result as on the whole image.
Images smaller than a tile are padded by reflection and the padding is cropped away again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError, one_sentence


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis covering [0, size) with tiles of `tile` (size >= tile)."""
    if size <= tile:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def seams(starts: list[int], tile: int, size: int) -> list[tuple[int, int]]:
    """For each tile, the [lo, hi) range of the full image it writes."""
    spans = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + tile + s) // 2
        hi = size if i == len(starts) - 1 else (s + tile + starts[i + 1]) // 2
        spans.append((lo, hi))
    return spans


def _model_tile(client: Any, model: str, version: Any) -> tuple[int, int] | None:
    meta = client.get_metadata(model, version)
    spec = next(iter(meta.inputs.values()))
    if len(spec.shape) == 4 and spec.shape[1] > 0 and spec.shape[2] > 0:
        return int(spec.shape[1]), int(spec.shape[2])
    return None


def predict_tiled(client: Any, model: str, version: Any, images: np.ndarray, *,
                  tile_shape: tuple[int, int] | None = None, overlap: int | None = None,
                  deadline: float | None = None) -> np.ndarray:
    """Predict (N,H,W,C) images of any size with a model taking (B,th,tw,C) tiles.

    `tile_shape` defaults to the model's input size (the whole image when the model takes any
    size); `overlap` defaults to a quarter of the tile (at most 64 pixels).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise UserError(one_sentence(f"expected images shaped (N, H, W, C), got shape {images.shape}"))
    n, height, width, channels = images.shape
    if tile_shape is None:
        tile_shape = _model_tile(client, model, version) or (height, width)
    th, tw = int(tile_shape[0]), int(tile_shape[1])
    if th < 1 or tw < 1:
        raise UserError(one_sentence(f"tile shape must be positive, got {tile_shape}"))
    if overlap is None:
        overlap = min(64, th // 4, tw // 4)
    if overlap < 0 or overlap >= min(th, tw):
        raise UserError(one_sentence(f"tile overlap {overlap} must be smaller than the tile {tile_shape}"))

    pad_h, pad_w = max(0, th - height), max(0, tw - width)
    if pad_h or pad_w:
        mode = "reflect" if height > 1 and width > 1 else "edge"
        images = np.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    full_h, full_w = images.shape[1], images.shape[2]
    ys, xs = tile_starts(full_h, th, overlap), tile_starts(full_w, tw, overlap)
    if len(ys) == 1 and len(xs) == 1 and full_h == th and full_w == tw:
        tiles = images
    else:
        tiles = np.empty((n * len(ys) * len(xs), th, tw, channels), dtype=images.dtype)
        k = 0
        for i in range(n):
            for y in ys:
                for x in xs:
                    tiles[k] = images[i, y:y + th, x:x + tw]
                    k += 1
    predicted = client.predict(model, version, tiles, deadline=deadline)
    if isinstance(predicted, dict):
        if len(predicted) != 1:
            raise UserError(one_sentence(f"model {model!r} has several outputs; tile it per output"))
        predicted = next(iter(predicted.values()))
    if predicted.ndim == 3:
        predicted = predicted[..., None]
    if predicted.shape[:3] != tiles.shape[:3]:
        raise UserError(one_sentence(
            f"model {model!r} returned tiles shaped {predicted.shape[1:3]} for input tiles {(th, tw)}; "
            "tiling needs a model whose output has the input's height and width"))
    out = np.empty((n, full_h, full_w, predicted.shape[3]), dtype=predicted.dtype)
    y_spans, x_spans = seams(ys, th, full_h), seams(xs, tw, full_w)
    k = 0
    for i in range(n):
        for y, (y0, y1) in zip(ys, y_spans):
            for x, (x0, x1) in zip(xs, x_spans):
                out[i, y0:y1, x0:x1] = predicted[k, y0 - y:y1 - y, x0 - x:x1 - x]
                k += 1
    return out[:, :height, :width]
