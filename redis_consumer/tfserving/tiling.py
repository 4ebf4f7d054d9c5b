"""Cut large images into overlapping tiles of the model's input size, predict, stitch.

Tiles start every `tile - overlap` pixels, the last one flush with the edge; each output pixel is
taken from the tile in which it lies farthest from a cut (the seam sits in the middle of each
overlap), so a model with a limited receptive field gives the same result as on the whole image.
Images smaller than a tile are padded by reflection and the padding is cropped away again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserError, one_sentence, quote
from . import messages


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


def _single_input(client: Any, model: str, version: Any,
                  deadline: float | None = None) -> tuple[str, tuple[int, int] | None, np.dtype | None]:
    """The model's only input: its name, fixed (height, width) if any, and numeric dtype if known."""
    meta = client.get_metadata(model, version, deadline=deadline)
    if len(meta.inputs) != 1:
        raise UserError(one_sentence(f"model {quote(model)} takes inputs {sorted(meta.inputs)}; tiling needs one"))
    name, spec = next(iter(meta.inputs.items()))
    tile = None
    if len(spec.shape) == 4 and spec.shape[1] > 0 and spec.shape[2] > 0:
        tile = (int(spec.shape[1]), int(spec.shape[2]))
    dtype = np.dtype(spec.dtype) if np.dtype(spec.dtype).kind in "biuf" else None
    return name, tile, dtype


def predict_tiled(client: Any, model: str, version: Any, images: np.ndarray, *,
                  tile_shape: tuple[int, int] | None = None, overlap: int | None = None,
                  deadline: float | None = None) -> np.ndarray:
    """Predict (N,H,W,C) images of any size with a model taking (B,th,tw,C) tiles.

    `tile_shape` defaults to the model's input size (the whole image when the model takes any
    size); `overlap` defaults to a quarter of the tile (at most 64 pixels). Tiles are cut just
    before their batch is sent and stitched as soon as it comes back, while other batches run.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise UserError(one_sentence(f"expected images shaped (N, H, W, C), got shape {images.shape}"))
    n, height, width, channels = images.shape
    input_name, model_tile, model_dtype = _single_input(client, model, version, deadline)
    send_dtype = model_dtype or images.dtype  # tiles are cast to what the model takes while cut
    if tile_shape is None:
        tile_shape = model_tile or (height, width)
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
    y_spans, x_spans = seams(ys, th, full_h), seams(xs, tw, full_w)
    plan = [(i, y, x, y0, y1, x0, x1) for i in range(n)
            for y, (y0, y1) in zip(ys, y_spans) for x, (x0, x1) in zip(xs, x_spans)]
    result: dict[str, np.ndarray] = {}

    def source(lo: int, hi: int) -> Any:
        if lo == 0 and hi == n and len(plan) == n and full_h == th and full_w == tw:
            return {input_name: images.astype(send_dtype, copy=False)}
        if send_dtype.kind in "biufc":  # cut the tiles straight into the request bytes
            writer = messages.RequestWriter(model, version, {input_name: (send_dtype, (hi - lo, th, tw, channels))})
            batch = writer.arrays[input_name]
        else:
            writer, batch = None, np.empty((hi - lo, th, tw, channels), dtype=send_dtype)
        for j, (i, y, x, *_rest) in enumerate(plan[lo:hi]):
            batch[j] = images[i, y:y + th, x:x + tw]
        return writer if writer is not None else {input_name: batch}

    def sink(lo: int, hi: int, outputs: dict[str, np.ndarray]) -> None:
        if len(outputs) != 1:
            raise UserError(one_sentence(f"model {quote(model)} has outputs {sorted(outputs)}; tiling needs one"))
        tiles = next(iter(outputs.values()))
        if tiles.ndim == 3:
            tiles = tiles[..., None]
        if tiles.ndim != 4 or tiles.shape[:3] != (hi - lo, th, tw):
            raise UserError(one_sentence(
                f"model {quote(model)} returned tiles shaped {tiles.shape} for input tiles {(hi - lo, th, tw)}; "
                "tiling needs a model whose output has the input's height and width"))
        out = result.get("out")
        if out is None:
            out = result["out"] = np.empty((n, full_h, full_w, tiles.shape[3]), dtype=tiles.dtype)
        for j, (i, y, x, y0, y1, x0, x1) in enumerate(plan[lo:hi]):
            out[i, y0:y1, x0:x1] = tiles[j, y0 - y:y1 - y, x0 - x:x1 - x]

    client.predict_stream(model, version, len(plan), source, sink, deadline=deadline)
    return result["out"][:, :height, :width]
