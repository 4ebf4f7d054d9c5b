"""What the polaris and caliban consumers share: models from settings, tiles over our TF client,
in-process DeepCell applications, the result zip.

Kept small on purpose: the DeepCell consumers' base (`deepcell_base.py`) carries the general
versions; this module only adapts them to the two orchestrating job types, which run several
models per job instead of one.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..errors import UserError
from .tfserving_consumer import STORED_SUFFIXES, parse_model, wire_version


def model_setting(text: str) -> tuple[str, int | str]:
    """`NAME:VERSION` from a setting -> (name, wire version)."""
    name, version = parse_model(text)
    return name, wire_version(version)


def fixed_tile(metadata: Any, model: str) -> tuple[int, int]:
    """The (height, width) a tiling model takes: its only input must be (-1, H, W, C), H, W fixed.

    The applications tile with `model.input_shape` (deepcell-tf application.py:174-192), so a
    served model with unknown H or W cannot be tiled (deepcell-models.md section 0)."""
    inputs = getattr(metadata, "inputs", None) or {}
    if len(inputs) != 1:
        raise UserError(f"Model {model} takes inputs {sorted(inputs)} but an image model takes one; "
                        "check the model setting.")
    shape = tuple(next(iter(inputs.values())).shape)
    if len(shape) != 4 or shape[1] < 1 or shape[2] < 1:
        raise UserError(f"Model {model} takes inputs of shape {list(shape)} but tiling needs a fixed "
                        "(batch, height, width, channels) input; check the model setting.")
    return int(shape[1]), int(shape[2])


def predict_tiles(tf: Any, model: str, version: Any, deadline: Callable[[], float]) -> Callable[[np.ndarray], Any]:
    """(N, T, T, C) tiles -> {output name: (N, T, T, k)} through the TF Serving client."""

    def call(tiles: np.ndarray) -> Any:
        out = tf.predict(model, version, {_input_name(tf, model, version, deadline): tiles}, deadline=deadline())
        return out if isinstance(out, Mapping) else {"output": out}

    return call


def _input_name(tf: Any, model: str, version: Any, deadline: Callable[[], float]) -> str:
    meta = tf.get_metadata(model, version, deadline=deadline())
    return next(iter(meta.inputs))


def pad_to_tile(image: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Reflect-pad (B, X, Y, C) at the high end of any axis shorter than the tile.

    The application pads both axes by the absolute difference when either is short
    (deepcell-tf application.py:174-187), which hands a fixed-shape served model a non-tile
    input; padding only the short axis up to the tile keeps every request tile-sized."""
    px, py = max(0, tile[0] - image.shape[1]), max(0, tile[1] - image.shape[2])
    if not (px or py):
        return image
    return np.pad(image, ((0, 0), (0, px), (0, py), (0, 0)), mode="reflect")


def batch_tiles(tf: Any, model: str, settings: Any) -> int:
    """Tiles per request: what the client learned the server takes, else TF_MAX_BATCH_SIZE."""
    size = getattr(tf, "batch_size", None)
    return max(1, int(size(model)) if callable(size) else int(settings.TF_MAX_BATCH_SIZE))


def run_app(spec: Any, image: np.ndarray, model_text: str, tf: Any, settings: Any, deadline: Callable[[], float], *,
            scale: float = 1.0, compartment: str | None = None, timings: dict | None = None) -> np.ndarray:
    """One DeepCell application in-process on (B, X, Y, C): (B, X, Y, K) int32 labels.

    `scale` is the kiosk's resize factor (image_mpp = scale * model_mpp, base_consumer.py:434-476)."""
    from ..deepcell.pipeline import run_application

    model, version = model_setting(model_text)
    meta = tf.get_metadata(model, version, deadline=deadline())
    tile = fixed_tile(meta, f"{model}:{version}")
    height, width = image.shape[1:3]
    padded = pad_to_tile(np.asarray(image, dtype=np.float32), tile)
    mpp = None if scale == 1.0 else scale * spec.model_mpp
    try:
        labels = run_application(spec, padded, predict_tiles(tf, model, version, deadline), tile_shape=tile,
                                 image_mpp=mpp, batch_size=batch_tiles(tf, model, settings),
                                 compartment=compartment, timings=timings)
    except ValueError as exc:
        raise UserError(f"{spec.name} could not run on this image with model {model}:{version}: {exc}.") from None
    return labels[:, :height, :width]


def stem(fields: Mapping[str, str]) -> str:
    """`{name}` of the kiosk's result files: the original name's basename without extension (3.8)."""
    name = os.path.basename(fields.get("original_name") or fields.get("input_file_name") or "image")
    base = name.rsplit(".", 1)[0] if "." in name else name
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base).strip("._")
    return safe[:100] or "image"


def write_zip(zip_path: str, files: Iterable[str], summary: Mapping[str, Any], log_lines: Iterable[str]) -> str:
    """Result zip: files at the root (PNG stored, the rest deflated), results.json and log.txt."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for path in files:
            packed = path.lower().endswith(STORED_SUFFIXES)
            zf.write(path, os.path.basename(path), zipfile.ZIP_STORED if packed else zipfile.ZIP_DEFLATED)
        zf.writestr("results.json", json.dumps(summary, indent=2, default=_jsonable))
        zf.writestr("log.txt", "\n".join(log_lines) + "\n")
    return zip_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
