"""The threshold fallback of `segmentation`: for the old any-size demo model only.

Used when a job's `model_name` names a model with one output head and no fixed tile (the dev
server's `NuclearSegmentation:1`, `image` -> `probability`): normalise the input, threshold
the foreground probability into connected objects (touching ones split where the shape says so)
and write `{name}_labels.tif`, an outline overlay PNG and `results.json`. Every DeepCell model
(fixed (-1, T, T, C) tiles, PanopticNet heads) goes through `segmentation.py`'s application path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import UserError, quote
from ..utils import labels as label_utils
from ..utils import overlay
from .base import Job
from .tfserving_consumer import Result, TensorFlowServingConsumer


class ThresholdSegmentation(TensorFlowServingConsumer):
    """Foreground-probability thresholding for single-head, any-size models (the demo model)."""

    name = "segmentation"
    #: Probability above which a pixel belongs to an object.
    threshold = 0.5
    #: Objects smaller than this many pixels are noise.
    min_object_size = 9

    def preprocess(self, image: np.ndarray, fields: Mapping[str, str]) -> np.ndarray:
        """Per-channel percentile normalisation to [0, 1] (float32), rescaled by the kiosk `scale`."""
        normalized = label_utils.normalize(image)
        self._normalized = normalized  # the overlay is drawn at the input's own size
        scale = scale_of(fields)
        if scale == 1.0:
            return normalized
        _, height, width, _ = image.shape
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        limit = 4 * self.settings.MAX_IMAGE_HEIGHT * self.settings.MAX_IMAGE_WIDTH
        if new_h * new_w > limit:
            raise UserError(
                f"The job's scale {scale:g} would make the image {new_h}x{new_w} pixels, more than the model "
                "may process; use a smaller scale."
            )
        from scipy import ndimage

        self.log_job(f"rescaled by {scale:g} to {new_h}x{new_w} for the model")
        return ndimage.zoom(normalized, (1, new_h / height, new_w / width, 1), order=1, grid_mode=True, mode="nearest")

    def check_prediction(self, prediction: Any, batch: np.ndarray, model: str, version: str) -> None:
        """The output must be a map of the input that was sent: same frames, height and width.

        Postprocess only resizes labels back from the size the job's `scale` gave the model
        input, so an output of any other shape is the model's fault, not something to stretch.
        """
        got = tuple(_first_head(prediction).shape)
        want = tuple(batch.shape[:3])
        if len(got) not in (3, 4) or got[:3] != want:
            raise UserError(
                f"Model {model}:{version} returned an output of shape {'x'.join(map(str, got)) or 'scalar'} for an "
                f"input of shape {'x'.join(map(str, batch.shape))}, but a segmentation model must return "
                f"{'x'.join(map(str, want))}xC (frames x height x width x channels); check the model name and version."
            )

    def postprocess(self, prediction: np.ndarray, image: np.ndarray, fields: Mapping[str, str]) -> Result:
        prediction = _first_head(prediction)
        prob = label_utils.foreground(prediction)
        labels = label_utils.label_objects(prob, self.threshold, self.min_object_size)
        if labels.shape[1:] != image.shape[1:3]:  # the job's `scale`: labels back to the input's size
            labels = label_utils.resize_nearest(labels, image.shape[1], image.shape[2])
        counts = label_utils.count_objects(labels)
        self.log_job(f"found {sum(counts)} object(s) in {len(counts)} frame(s)")
        return Result(
            arrays={"labels": labels},
            summary={
                "output_shape": list(prediction.shape),
                "label_shape": list(labels.shape),
                "object_count": int(sum(counts)),
                "objects_per_frame": counts,
                "threshold": self.threshold,
            },
            hash_fields={"object_count": int(sum(counts))},
        )

    def save(self, result: Result, image: np.ndarray, outdir: str, fields: Mapping[str, str]) -> list[str]:
        """labels.tif (uint16 when it fits) and overlay.png (first frame, first channel)."""
        import tifffile

        labels = result.arrays["labels"]
        base = _stem(fields)
        label_path = os.path.join(outdir, f"{base}_labels.tif")
        compact = label_utils.compact_dtype(labels)
        tifffile.imwrite(label_path, compact if compact.shape[0] > 1 else compact[0])
        shown = self._normalized if self._normalized is not None else label_utils.normalize(image[:1])
        overlay_path = os.path.join(outdir, f"{base}_overlay.png")
        overlay.save_png(overlay_path, shown[0, :, :, 0], compact[0], clipped=True)  # normalize() clips
        return [label_path, overlay_path]

    _normalized: np.ndarray | None = None

    def consume(self, job: Job) -> dict[str, Any]:
        self._normalized = None
        try:
            return super().consume(job)
        finally:
            self._normalized = None


def _first_head(prediction: Any) -> np.ndarray:
    """Multi-head models answer with a dict of outputs: segmentation uses the first head."""
    if isinstance(prediction, dict):
        prediction = next(iter(prediction.values()))
    return np.asarray(prediction)


def scale_of(fields: Mapping[str, str]) -> float:
    """The kiosk's `scale` field: how much to enlarge the image for the model (empty = 1)."""
    raw = (fields.get("scale") or "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.1 <= value <= 10.0:
        raise UserError(f"The job's scale field must be a number from 0.1 to 10, got {quote(raw)}.")
    return value


def _stem(fields: Mapping[str, str]) -> str:
    name = os.path.basename(fields.get("original_name") or fields.get("input_file_name") or "image")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in stem).strip("._")
    return safe[:100] or "image"
