"""Models the dev server serves: numpy references, a simulated GPU, and TF SavedModels.

The models with the DeepCell Kiosk's real serving signatures live in `deepcell_models.py`.
`NuclearSegmentation` (version 1) is a deterministic stand-in for a trained network: local background
subtraction, smoothing and a logistic on a robust noise estimate give a per-pixel foreground
probability that separates bright blobs from background, for any image size. `SimulatedGPU` runs
one batch at a time for `base + per_sample * batch + per_megapixel * pixels` seconds, queued
like on one GPU, and counts busy time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .messages import ModelMetadata, TensorSpec

F32 = np.dtype("float32")


class ModelInputError(ValueError):
    """Bad input for a model: the server answers INVALID_ARGUMENT with this text."""


class Model:
    """A served model version: metadata plus `predict(inputs) -> outputs` on numpy arrays."""

    name = ""
    version = 1
    #: True when `run` adds its own busy time (SimulatedGPU counts only time holding the GPU)
    times_busy_itself = False

    def __init__(self) -> None:
        self.busy_seconds = 0.0
        self.batches = 0
        self.samples = 0
        self._stats_lock = threading.Lock()

    def metadata(self) -> ModelMetadata:
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        meta = self.metadata()
        unknown = sorted(set(inputs) - set(meta.inputs))
        if unknown:
            raise ModelInputError(
                f"input tensor alias not found in signature: {', '.join(unknown)}. "
                f"Inputs expected to be in the set {{{','.join(sorted(meta.inputs))}}}.")
        missing = sorted(set(meta.inputs) - set(inputs))
        if missing:
            raise ModelInputError(f"Missing input tensor alias: {', '.join(missing)}")
        for key, spec in meta.inputs.items():
            _check_shape(key, inputs[key].shape, spec.shape)
        start = time.perf_counter()
        outputs = self.run(inputs)
        elapsed = time.perf_counter() - start
        batch = next(iter(inputs.values())).shape[0] if inputs and next(iter(inputs.values())).ndim else 1
        self._record(int(batch), None if self.times_busy_itself else elapsed)
        return outputs

    def _record(self, samples: int, busy_seconds: float | None = None) -> None:
        """Count one batch of `samples`, and its busy time unless None."""
        with self._stats_lock:
            self.batches += 1
            self.samples += samples
            if busy_seconds is not None:
                self.busy_seconds += busy_seconds

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {"busy_seconds": self.busy_seconds, "batches": self.batches, "samples": self.samples}


def _check_shape(key: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if not expected:
        return
    if len(shape) != len(expected) or any(e >= 0 and s != e for s, e in zip(shape, expected)):
        raise ModelInputError(f"input {key} has shape {list(shape)}, the model expects {list(expected)} "
                              "(-1 means any size)")


class Identity(Model):
    """Returns its input unchanged (any dtype, any shape): tests the codec and the tiler."""

    name = "Identity"

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(self.name, self.version, {"image": TensorSpec(F32, (-1, -1, -1, -1))},
                             {"output": TensorSpec(F32, (-1, -1, -1, -1))})

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(inputs) != {"image"}:
            return super().predict(inputs)
        self._record(int(inputs["image"].shape[0]) if inputs["image"].ndim else 1)  # no busy time
        return {"output": inputs["image"]}


class NuclearSegmentation(Model):
    """(N,H,W,1) raw fluorescence -> (N,H,W,1) foreground probability in [0, 1]."""

    name = "NuclearSegmentation"
    background_window = 41
    smoothing = 1.5

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(self.name, self.version, {"image": TensorSpec(F32, (-1, -1, -1, 1))},
                             {"probability": TensorSpec(F32, (-1, -1, -1, 1))})

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = inputs["image"]
        out = np.empty(images.shape, dtype=np.float32)
        for i in range(images.shape[0]):
            out[i, ..., 0] = foreground_probability(images[i, ..., 0], self.background_window, self.smoothing)
        return {"probability": out}


def foreground_probability(image: np.ndarray, window: int = 41, sigma: float = 1.5) -> np.ndarray:
    """Smooth, subtract the local mean background, and squash by a robust noise scale."""
    from scipy import ndimage

    x = np.asarray(image, dtype=np.float32)
    smooth = ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=3.0)
    background = ndimage.uniform_filter(smooth, size=window, mode="reflect")
    diff = smooth - background
    step = max(1, diff.size // 65536)  # a subsample is plenty for the noise estimate
    sample = diff.reshape(-1)[::step]
    center = np.median(sample)
    noise = 1.4826 * float(np.median(np.abs(sample - center)))
    noise = max(noise, 1e-6 * max(float(np.abs(x).max()), 1.0), 1e-12)
    z = (diff - center - 3.0 * noise) / noise
    return (0.5 * (1.0 + np.tanh(0.5 * np.clip(z, -60, 60)))).astype(np.float32)  # logistic


#: SimulatedGPU's default cost per megapixel: 0.5 ms per 256x256 tile, what it used to charge per tile
DEFAULT_GPU_MS_PER_MPIXEL = 0.5 / (256 * 256 / 1e6)


class SimulatedGPU(Model):
    """Identity that holds one simulated GPU for `base + per_sample * batch + per_mpixel * Mpx`.

    Charging per pixel (not per tile) keeps the figures honest across tile sizes: a 128x128
    tile carries a quarter of a 256x256 tile's bytes and costs a quarter of its GPU time.
    `dtype` is the input dtype the model's metadata declares (float32, or float16/uint16/uint8
    for a model that takes narrower inputs; the tiler then sends fewer bytes); `out_dtype` is its
    output's (default float32, like the DeepCell heads); the output holds the input's values.
    """

    name = "SimulatedGPU"
    times_busy_itself = True

    def __init__(self, base_seconds: float = 0.004, per_sample_seconds: float = 0.0, tile: int = 256,
                 per_megapixel_seconds: float = DEFAULT_GPU_MS_PER_MPIXEL / 1000.0, dtype: Any = F32,
                 out_dtype: Any = F32) -> None:
        super().__init__()
        self.base = base_seconds
        self.per_sample = per_sample_seconds
        self.per_mpixel = per_megapixel_seconds
        self.tile = tile
        self.dtype = np.dtype(dtype)
        self.out_dtype = np.dtype(out_dtype)
        self._gpu = threading.Lock()  # guards the booking of the device's timeline
        self._free_at = 0.0  # perf_counter time the last booked batch ends

    def metadata(self) -> ModelMetadata:
        shape = (-1, self.tile, self.tile, 1) if self.tile else (-1, -1, -1, 1)
        return ModelMetadata(self.name, self.version, {"image": TensorSpec(self.dtype, shape)},
                             {"output": TensorSpec(self.out_dtype, shape)})

    def service_seconds(self, batch: int, pixels: int | None = None) -> float:
        """GPU time for `batch` samples of `pixels` pixels in all (default: batch full tiles)."""
        if pixels is None:
            side = self.tile or 256
            pixels = batch * side * side
        return self.base + self.per_sample * batch + self.per_mpixel * pixels / 1e6

    def occupy(self, batch: int, pixels: int | None = None) -> float:
        """Run one batch on the simulated device; returns its service seconds (the busy time).

        Like a GPU's stream, the device takes batches in arrival order and starts each the moment
        the one before it ends: the batch is booked at `max(now, end of the last booking)` and
        this thread sleeps until its end. The start does not wait for this Python thread to be
        scheduled (or to get the GIL) after the previous batch, which a real device never does
        either; only the reply goes out when the thread wakes. Other models may share this GPU
        (`serve-model --simulate-gpu` gives the DeepCell models this one), so all their batches
        queue on one timeline like on one device.
        """
        service = self.service_seconds(batch, pixels)
        with self._gpu:
            start = max(time.perf_counter(), self._free_at)
            end = self._free_at = start + service
        while True:  # sleep() can wake early; the batch is done at `end`
            left = end - time.perf_counter()
            if left <= 0:
                return service
            time.sleep(left)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = inputs["image"]
        batch = images.shape[0] if images.ndim else 1
        pixels = int(np.prod(images.shape[:3])) if images.ndim >= 3 else None
        held = self.occupy(batch, pixels)
        with self._stats_lock:
            self.busy_seconds += held
        return {"output": images.astype(self.out_dtype, copy=False)}


class SavedModel(Model):
    """A TensorFlow SavedModel in TF Serving's layout, run through TensorFlow (the `serve` extra)."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        super().__init__()
        import tensorflow as tf  # only the dev server with --model-dir ever imports this

        self.tf = tf
        self.name = name
        self.version = version
        self.loaded = tf.saved_model.load(str(path))
        self.fn = self.loaded.signatures["serving_default"]
        self._meta = self._describe()
        self._lock = threading.Lock()

    def _describe(self) -> ModelMetadata:
        def spec(t: Any) -> TensorSpec:
            shape = tuple(-1 if d is None else int(d) for d in t.shape.as_list())
            return TensorSpec(np.dtype(t.dtype.as_numpy_dtype), shape)

        inputs = {k: spec(v) for k, v in self.fn.structured_input_signature[1].items()}
        outputs = {k: spec(v) for k, v in self.fn.structured_outputs.items()}
        return ModelMetadata(self.name, self.version, inputs, outputs)

    def metadata(self) -> ModelMetadata:
        return self._meta

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = {k: self.tf.constant(v) for k, v in inputs.items()}
        with self._lock:
            result = self.fn(**tensors)
        return {k: v.numpy() for k, v in result.items()}


def load_model_dir(root: str | Path) -> list[Model]:
    """Every `root/<name>/<version>/saved_model.pb` as a served model."""
    found: list[Model] = []
    for pb in sorted(Path(root).glob("*/*/saved_model.pb")):
        version_dir = pb.parent
        if version_dir.name.isdigit():
            found.append(SavedModel(version_dir.parent.name, int(version_dir.name), version_dir))
    return found
