"""run_application: one image batch through an application, with the model as a callable.

The order is deepcell-tf `Application._predict_segmentation` (application.py:394-454): check
rank and channels, resize by mpp, preprocess the whole image, tile (or pad a small image),
predict in batches, untile every head, format, deep watershed per compartment, resize labels
back. The model is whatever `predict_tiles` does (our gRPC client, the dev server, a test fake),
called once per batch so a caller can pipeline requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from redis_consumer.deepcell.apps import AppSpec
from redis_consumer.deepcell.resize import resize_input, resize_labels
from redis_consumer.deepcell.tiling import tile_input, untile
from redis_consumer.deepcell.watershed import deep_watershed

Heads = list[np.ndarray] | dict[str, np.ndarray]
PredictTiles = Callable[[np.ndarray], Heads]


class _Clock:
    def __init__(self, timings: dict | None, timer: Callable[[], float]):
        self.timings, self.timer = timings, timer
        self.last = timer()

    def lap(self, stage: str) -> None:
        now = self.timer()
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + (now - self.last)
        self.last = now


def _as_list(outputs: Heads) -> list[np.ndarray]:
    """Heads in model order; a dict is ordered by sorted output name, as the kiosk does."""
    if isinstance(outputs, Mapping):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, np.ndarray):
        return [outputs]
    return [np.asarray(o) for o in outputs]


def predict_in_batches(tiles: np.ndarray, predict_tiles: PredictTiles, batch_size: int) -> list[np.ndarray]:
    """Every head for all tiles, stored in the tiles' dtype (as Application._batch_predict)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    heads: list[np.ndarray] = []
    for start in range(0, tiles.shape[0], batch_size):
        batch = np.ascontiguousarray(tiles[start:start + batch_size])
        outputs = _as_list(predict_tiles(batch))
        if start == 0 and batch.shape[0] == tiles.shape[0]:  # one call: its outputs are the heads
            _check_outputs(outputs, batch)
            # no second copy of the (for Mesmer ~50 MB) heads into fresh pages; the same values
            return [o.astype(tiles.dtype, copy=False) for o in outputs]
        if not heads:
            heads = [np.zeros((tiles.shape[0],) + o.shape[1:], dtype=tiles.dtype) for o in outputs]
        if len(outputs) != len(heads):
            raise ValueError(f"the model returned {len(outputs)} outputs, earlier {len(heads)}")
        for store, out in zip(heads, outputs):
            if out.shape[1:] != store.shape[1:]:
                raise ValueError(f"model output of shape {out.shape} does not match its input tiles "
                                 f"of shape {batch.shape}")
            _check_outputs([out], batch)
            store[start:start + batch.shape[0]] = out
    return heads


def _check_outputs(outputs: list[np.ndarray], batch: np.ndarray) -> None:
    for out in outputs:
        if out.ndim != 4 or out.shape[0] != batch.shape[0] or out.shape[1:3] != batch.shape[1:3]:
            raise ValueError(f"model output of shape {out.shape} does not match its input tiles "
                             f"of shape {batch.shape}")


def run_application(
    spec: AppSpec,
    image: np.ndarray,
    predict_tiles: PredictTiles,
    *,
    tile_shape: tuple[int, int] = (256, 256),
    image_mpp: float | None = None,
    batch_size: int = 16,
    overrides: Mapping[str, Any] | None = None,
    compartment: str | None = None,
    preprocess_kwargs: Mapping[str, Any] | None = None,
    exact_untile: bool = True,
    timings: dict | None = None,
    timer: Callable[[], float] = time.perf_counter,
    counts: list | None = None,
) -> np.ndarray:
    """Label a (B, X, Y, C) image with `spec`; returns (B, X, Y, K) int32, K compartments (laid
    out compartment by compartment: `labels[..., k]` is contiguous).

    `exact_untile=False` blends tiles with the toolbox's max-scaled window (see tiling.py).
    `timings`, when given, accumulates seconds per stage (resize, pre, tile, predict, untile,
    postprocess) as measured by `timer` (wall clock by default; time.process_time for CPU).
    `counts`, when given, receives the (B, K) int64 objects per item and compartment of the
    returned labels when they are the watershed's own (numbered 1..n, so n is their maximum:
    one max per plane instead of a count over the labels); nothing when they were resized.
    """
    if image.ndim != 4:
        raise ValueError(f"{spec.name} needs a (batch, x, y, channel) image, got {image.ndim} dimensions")
    if image.shape[-1] != spec.channels:
        raise ValueError(f"{spec.name} needs {spec.channels} channel(s), got {image.shape[-1]}")
    if min(image.shape[:3]) < 1:
        raise ValueError(f"{spec.name} got an empty image of shape {image.shape}")
    compartments = spec.select(compartment)
    kwargs = {c: spec.postprocess_kwargs(c, overrides) for c in compartments}
    clock = _Clock(timings, timer)

    resized = resize_input(image, image_mpp, spec.model_mpp)
    clock.lap("resize")
    prepared = spec.preprocess(resized, **{**spec.preprocess_kwargs, **(preprocess_kwargs or {})})
    clock.lap("pre")
    # a model that can return only some heads is asked for just those these compartments read
    needed = spec.heads_needed(compartments)
    select = getattr(predict_tiles, "select_heads", None)
    head_count = select(needed or ()) if select is not None else None
    # a gRPC model offers room for the tiles inside its request bytes: cut once, sent as cut
    tiles, info = tile_input(prepared, tile_shape, pad_mode=spec.pad_mode,
                             room=getattr(predict_tiles, "tile_buffer", None))
    tiles = tiles.astype(np.float32, copy=False)
    clock.lap("tile")
    heads: list = predict_in_batches(tiles, predict_tiles, batch_size)
    if head_count is not None:  # back in model order, None where a head was not asked for
        if len(heads) != len(needed):
            raise ValueError(f"the model returned {len(heads)} outputs where {len(needed)} were asked for")
        chosen = dict(zip(needed, heads))
        heads = [chosen.get(i) for i in range(head_count)]
    clock.lap("predict")
    # the formatting only picks heads and channels, which commutes with the per-channel
    # untiling: untile just what the postprocessing reads (Mesmer: 4 of its 8 channels)
    formatted = {c: [untile(h, info, exact=exact_untile) for h in hs]
                 for c, hs in spec.format_heads(heads).items() if c in compartments}
    clock.lap("untile")
    planes = [deep_watershed(formatted[c], **kwargs[c]) for c in compartments]
    # compartment-major memory, (B, X, Y, K) axes: each compartment's labels[..., k] is contiguous
    # for the overlay, the TIFF and the count (an interleaved K=2 array made each a strided pass)
    labels = planes[0] if len(planes) == 1 else np.moveaxis(np.stack([p[..., 0] for p in planes]), 0, -1)
    clock.lap("postprocess")
    sized = resize_labels(labels, image.shape[1:3])
    clock.lap("resize")
    if counts is not None and sized is labels:  # deep_watershed relabels each item 1..n
        counts.append(np.stack([p.max(axis=(1, 2, 3)) for p in planes], axis=-1).astype(np.int64))
    return sized
