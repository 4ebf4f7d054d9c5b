"""`classify`: one image in, its top-K class labels with scores out (ImageNet-classifier style).

Built only by subclassing `TensorFlowServingConsumer` and overriding its hooks; registered
through the `redis_consumer.consumers` entry point in pyproject.toml. It works with any model
that returns class scores, either (N, K) or a spatial score map (N, H, W, K) that is averaged
over the image. With the dev server's `Identity` model the "classes" are the image's channels,
so an RGB picture is classified as red, green or blue: enough to show the whole path.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

import numpy as np

from redis_consumer.consumers.tfserving_consumer import (
    Result,
    TensorFlowServingConsumer,
)
from redis_consumer.errors import UserError, quote
from redis_consumer.settings_base import Setting


def _readable_file(path: str) -> str | None:
    return None if not path or os.path.isfile(path) else "the path of a labels file that exists"


def _model(value: str) -> str | None:
    name, sep, version = value.rpartition(":")
    return None if sep and name and version.isdigit() else "a model NAME:VERSION such as Identity:1"


# This plug-in's own settings: typed, validated when the worker starts (a bad value exits 2),
# listed by `redis-consumer config` when CONSUMER_TYPE=classify.
MODEL = Setting("CLASSIFY_MODEL", str, "Identity:1",
                "Model `NAME:VERSION` when a job names none.", check=_model)
LABELS = Setting("CLASSIFY_LABELS", str, "",
                 "Labels file, one class name a line (empty: the packaged labels.txt).", check=_readable_file)
TOP_K = Setting("CLASSIFY_TOP_K", int, 5, "Labels reported per image when a job sets no `top_k`.", minimum=1)


def load_labels(path: str = "") -> list[str]:
    """Class names, one a line: the file at `path` (CLASSIFY_LABELS) or the packaged labels.txt."""
    return list(_read_labels(path or None))


@functools.cache
def _read_labels(path: str | None) -> tuple[str, ...]:
    """The labels file at `path` (None: the packaged one), read once per process."""
    if path:
        with open(path, encoding="utf-8") as fh:
            return tuple(line.strip() for line in fh if line.strip())
    text = resources.files(__package__).joinpath("labels.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """(N, K) scores -> probabilities: kept if they already are, else a softmax."""
    scores = np.asarray(scores, dtype=np.float64)
    sums = scores.sum(axis=1, keepdims=True)
    if scores.min() >= 0 and np.allclose(sums, 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class ClassifyConsumer(TensorFlowServingConsumer):
    """Top-K labels per image frame, written to the hash and to results.json."""

    name = "classify"
    settings_spec = (MODEL, LABELS, TOP_K)

    @property
    def options(self):
        """The worker's settings with this plug-in's own (read here too when a test built them bare)."""
        return self.settings.for_consumer(type(self))

    @property
    def default_model(self) -> str:  # type: ignore[override]
        """CLASSIFY_MODEL; a job's model_name/model_version win over it."""
        return MODEL.of(self.options)

    def top_k(self, fields: Mapping[str, str]) -> int:
        raw = fields.get("top_k") or TOP_K.of(self.options)
        try:
            return max(1, int(raw))
        except ValueError:
            raise UserError(f"The job's top_k field must be a whole number, got {quote(raw)}.") from None

    def preprocess(self, image: np.ndarray, fields: Mapping[str, str]) -> np.ndarray:
        """Scale to [0, 1] by the image's dtype range (what classifiers are trained on)."""
        x = image.astype(np.float32)
        if np.issubdtype(image.dtype, np.integer):
            x /= float(np.iinfo(image.dtype).max)
        return x

    def predict(self, batch: np.ndarray, model: str, version: str) -> Any:
        """Whole images, not tiles: a class score needs the full picture."""
        from redis_consumer.consumers.tfserving_consumer import wire_version

        return self.tf.predict(model, wire_version(version), batch, deadline=self.check_deadline())

    def postprocess(self, prediction: Any, image: np.ndarray, fields: Mapping[str, str]) -> Result:
        if isinstance(prediction, dict):
            prediction = next(iter(prediction.values()))
        scores = np.asarray(prediction, dtype=np.float64)
        if scores.ndim == 4:
            scores = scores.mean(axis=(1, 2))  # spatial score maps: average over the image
        if scores.ndim != 2:
            raise UserError(f"The model returned scores of shape {list(scores.shape)}; a classifier must return (N, K).")
        probs = to_probabilities(scores)
        labels = load_labels(LABELS.of(self.options))
        k = min(self.top_k(fields), probs.shape[1])
        frames = []
        for row in probs:
            order = np.argsort(-row)[:k]
            frames.append([{"label": labels[i] if i < len(labels) else f"class_{i}", "index": int(i),
                            "score": round(float(row[i]), 6)} for i in order])
        best = frames[0][0]
        self.log_job(f"top label {best['label']} ({best['score']:.3f})")
        return Result(
            arrays={"probabilities": probs},
            summary={"top_k": frames, "classes": int(probs.shape[1])},
            hash_fields={
                "top_label": best["label"],
                "top_score": best["score"],
                "top_labels": ",".join(f"{p['label']}:{p['score']:.4f}" for p in frames[0]),
            },
        )

    def save(self, result: Result, image: np.ndarray, outdir: str, fields: Mapping[str, str]) -> list[str]:
        """predictions.csv: frame, rank, label, score."""
        path = os.path.join(outdir, "predictions.csv")
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["frame", "rank", "label", "score"])
            for frame, top in enumerate(result.summary["top_k"]):
                for rank, item in enumerate(top, start=1):
                    writer.writerow([frame, rank, item["label"], item["score"]])
        return [path]
