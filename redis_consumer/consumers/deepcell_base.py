"""DeepCellConsumer: what every kiosk DeepCell job type (segmentation, mesmer, polaris, caliban) shares.

The kiosk's consumers hand a gRPC-backed fake Keras model to the `deepcell` applications
(KRC redis_consumer/grpc_clients.py:286-393, consumers/base_consumer.py:253-414). Here the
application is `redis_consumer.deepcell.run_application` and the model is `predict_tiles`: the
tiles of one image go through our pipelined TF Serving client (TF_MAX_BATCH_SIZE per request,
PIPELINE_DEPTH in flight) within the job's deadline. This module adds the served model's tile
size and channel count from GetModelMetadata, per-stage wall and CPU timings, the gRPC retry
count the kiosk reports as `predict_retries`, and the result files as the kiosk names them
(KRC redis_consumer/utils.py:111-160, base_consumer.py:478-504, segmentation_consumer.py:110-133)
beside our overlay PNGs and `results.json`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .. import idle_memory
from ..deepcell.apps import AppSpec
from ..deepcell.resize import resize_input, resize_labels, scaled_shape
from ..errors import UserError
from ..tfserving import calls
from .kiosk_outputs import KioskResultFiles, count_objects, kiosk_name, kiosk_tiff_names
from .tfserving_consumer import TensorFlowServingConsumer, parse_model, wire_version

__all__ = ["APP_STAGES", "DeepCellConsumer", "ModelInput", "count_objects", "kiosk_name", "kiosk_tiff_names"]

#: Stage names of `self.timings` / `self.cpu_timings`, in pipeline order: `run_app`'s, then the
#: result files' (`tiff`, `png`) and the zip's.
APP_STAGES = ("resize", "pre", "tile", "predict", "untile", "postprocess", "tiff", "png", "zip")


class ModelInput:
    """The served model's only input: name, fixed tile (T, T) and channel count."""

    def __init__(self, name: str, tile: tuple[int, int], channels: int, outputs: Sequence[str]) -> None:
        self.name, self.tile, self.channels, self.outputs = name, tile, channels, tuple(outputs)

    def __repr__(self) -> str:
        return f"ModelInput({self.name!r}, tile={self.tile}, channels={self.channels}, outputs={self.outputs})"


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` is `b`'s memory with `b`'s shape and dtype (a view of it counts)."""
    return (a.shape == b.shape and a.dtype == b.dtype and a.flags.c_contiguous
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


class _RetryCounter:
    """A CALL_OBSERVERS hook counting Predict attempts that failed transiently (UNAVAILABLE,
    DEADLINE_EXCEEDED: the ones the client retries); a batch the server refused as too large
    and split is not a retry."""

    TRANSIENT = frozenset(code.name for code in calls.RETRYABLE)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, method: str, code: str, seconds: float) -> None:
        if method == "Predict" and code in self.TRANSIENT:
            self.count += 1


def _stopwatch() -> np.ndarray:
    """(wall, cpu) seconds now; differences of these add up per stage in run_application."""
    return np.array([time.perf_counter(), time.process_time()])


class DeepCellConsumer(KioskResultFiles, TensorFlowServingConsumer):
    """Base of the DeepCell job types: the model as tiles over gRPC, the application, the files.

    Subclasses implement `consume(job)` (download, layout, `run_app`, `save_kiosk_tiffs`,
    `save_overlay`, `write_result_zip`, upload); `begin_job()` resets the per-job state.
    """

    name = "deepcell"
    #: Tiles per call of the application's predict step: all tiles at once, so that our client
    #: pipelines them in batches of TF_MAX_BATCH_SIZE (the kiosk sends min(32, model batch)
    #: per blocking RPC, KRC segmentation_consumer.py:198, grpc_clients.py:345-364).
    app_batch_size = 1 << 30
    #: What running an application imports (scipy, scikit-image: ~0.2 s, ~40 MB), warmed before
    #: the first claim by the job types whose every job runs one.
    app_modules = ("scipy.ndimage", "redis_consumer.deepcell.pipeline", "redis_consumer.deepcell.preprocess",
                   "redis_consumer.utils.overlay")
    warm_modules = (*TensorFlowServingConsumer.warm_modules, *app_modules)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.begin_job()
        idle_memory.register(self.drop_job_results)

    def postprocess_overrides(self, setting: str, *specs: AppSpec) -> dict[str, Any]:
        """The JSON setting `setting` (deep-watershed overrides) checked against `specs`; a
        ConfigError at worker start for an unknown parameter or compartment."""
        from ..errors import ConfigError

        text = str(getattr(self.settings, setting, "") or "").strip()
        overrides = json.loads(text) if text else {}
        try:
            for spec in specs:
                for compartment in spec.compartments:
                    spec.postprocess_kwargs(compartment, overrides)
        except ValueError as exc:
            raise ConfigError(f"{setting}: {exc}") from None
        return overrides

    def begin_job(self) -> None:
        """Forget the previous job's timings, retries and app records."""
        self.timings, self.cpu_timings = {}, {}
        self.predict_retries = 0
        self.apps_run: list[dict[str, Any]] = []
        self._count_memo: dict[tuple, tuple[np.ndarray, list[int]]] = {}
        #: Result files kept in memory, by the path they would have on disk: the zip deflates them
        #: from here (no write and read back of ~4 MB TIFFs per image).
        self.memory_files: dict[str, Any] = {}

    def drop_job_results(self) -> None:
        """Let go of the last job's labels, which the object-count memo holds until the next
        `begin_job` (run when the worker goes idle: 4 bytes a pixel, 16 MB after a 2048x2048 image)."""
        self._count_memo = {}

    # -- the model --------------------------------------------------------------------------
    def model_input(self, model: str, version: str) -> ModelInput:
        """The model's single (-1, T, T, C) input from GetModelMetadata; UserError otherwise."""
        meta = self.tf.get_metadata(model, wire_version(version), deadline=self.check_deadline())
        inputs = dict(getattr(meta, "inputs", {}) or {})
        if len(inputs) != 1:
            raise UserError(f"Model {model}:{version} takes {len(inputs)} inputs ({', '.join(sorted(inputs)) or 'none'}) "
                            "but a DeepCell application needs one (-1, T, T, C) image input; check the model setting.")
        (name, spec), = inputs.items()
        shape = tuple(int(s) for s in (getattr(spec, "shape", ()) or ()))
        if len(shape) != 4 or shape[1] <= 0 or shape[2] <= 0 or shape[3] <= 0 or shape[1] != shape[2]:
            raise UserError(f"Model {model}:{version} takes input {name!r} of shape {_shape_text(shape)} but a DeepCell "
                            "application needs fixed square tiles (-1, T, T, C); check the model setting.")
        return ModelInput(name, (shape[1], shape[2]), shape[3], sorted(getattr(meta, "outputs", {}) or {}))

    def model_tile_shape(self, model: str, version: str) -> tuple[int, int]:
        """(T, T) of the served model's input."""
        return self.model_input(model, version).tile

    def model_channels(self, model: str, version: str) -> int:
        """C of the served model's input."""
        return self.model_input(model, version).channels

    def predict_tiles(self, model: str, version: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        """A callable (N, T, T, C) float32 tiles -> {output name: (N, T, T, k)} through our client.

        Each call sends every tile it is given, batched and pipelined by the client, within the
        job's deadline (checked per call); transiently failed Predict attempts count into
        `predict_retries`.
        """
        spec = self.model_input(model, version)
        wire = wire_version(version)
        handed: list = []  # [(RequestWriter, its input array)] of the last tile_buffer
        chosen: list[str] = []  # the outputs to ask for (select_heads); empty: all

        def select_heads(indices: Sequence[int]) -> int | None:
            """Ask only for the outputs at `indices` of the sorted output names (the kiosk's head
            order); returns how many outputs the model has, or None (all outputs: no indices, or
            a stand-in client)."""
            names = spec.outputs
            chosen[:] = []
            if not hasattr(self.tf, "predict_stream") or not indices or max(indices) >= len(names):
                return None
            chosen[:] = [names[i] for i in indices]
            return len(names)

        def tile_buffer(shape: tuple[int, ...]) -> np.ndarray | None:
            """float32 room for all tiles inside one Predict request's bytes, so the tiler cuts
            them straight into what gRPC sends (no tiles array, no copy into the request), or
            None (a stand-in client, or more tiles than one request takes)."""
            one_request = getattr(self.tf, "one_request", None)
            writer = one_request(model, wire, spec.name, np.float32, tuple(shape), chosen) if one_request else None
            handed[:] = [(writer, writer.arrays[spec.name])] if writer is not None else []
            return handed[0][1] if handed else None

        def predict(tiles: np.ndarray) -> dict[str, np.ndarray]:
            counter = _RetryCounter()
            calls.CALL_OBSERVERS.append(counter)
            batch = np.ascontiguousarray(tiles, dtype=np.float32)
            request = None
            if handed and _same_array(batch, handed[0][1]):
                request = handed.pop()[0].finish()
            try:
                if hasattr(self.tf, "predict_stream") and batch.shape[0]:
                    out = self._predict_views(model, wire, spec.name, batch, request, chosen)
                else:
                    out = self.tf.predict(model, wire, {spec.name: batch}, deadline=self.check_deadline())
            finally:
                calls.CALL_OBSERVERS.remove(counter)
                self.predict_retries += counter.count
            if not isinstance(out, Mapping):  # a stand-in that answers one output as an array
                out = {spec.outputs[0] if spec.outputs else "output": out}
            return {k: np.asarray(v) for k, v in out.items()}

        predict.tile_buffer = tile_buffer  # type: ignore[attr-defined]  (both read by run_application)
        predict.select_heads = select_heads  # type: ignore[attr-defined]
        return predict

    def _predict_views(self, model: str, wire: Any, input_name: str, tiles: np.ndarray,
                       request: bytes | None = None, output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Every output for `tiles` through the client's pipelined stream, without the copy
        `predict` makes: when one reply holds all tiles its read-only views into the reply are
        the result (for Mesmer ~50 MB a job not copied into fresh pages), else the batches are
        joined once. `request`: all tiles' Predict request, already framed (`tile_buffer`); a
        batch the server refuses as too large is cut from `tiles` again. `output_filter`: the
        outputs asked for (empty: all)."""
        parts: list[tuple[int, dict[str, np.ndarray]]] = []
        n = tiles.shape[0]

        def source(lo: int, hi: int) -> Any:
            return request if request is not None and (lo, hi) == (0, n) else {input_name: tiles[lo:hi]}

        self.tf.predict_stream(model, wire, n, source,
                               lambda lo, hi, outputs: parts.append((lo, dict(outputs))),
                               deadline=self.check_deadline(), **({"output_filter": tuple(output_filter)}
                                                                  if output_filter else {}))
        parts.sort(key=lambda p: p[0])
        if len(parts) == 1:
            return parts[0][1]
        names = set(parts[0][1])
        if any(set(p) != names for _, p in parts):
            raise ValueError("the model returned different outputs for different batches of tiles")
        return {name: np.concatenate([p[name] for _, p in parts]) for name in sorted(names)}

    # -- the application --------------------------------------------------------------------
    def run_app(self, spec: AppSpec, image_bxyc: np.ndarray, model: str, *, scale: float = 1.0,
                overrides: Mapping[str, Any] | None = None, compartment: str | None = None) -> np.ndarray:
        """Label a (B, X, Y, C) image with application `spec` on `model` (`NAME:VERSION`).

        `image_mpp = scale x spec.model_mpp` (KRC segmentation_consumer.py:190-200). Returns
        (B, X, Y, K) int32 labels at the input's size, K = compartments (Mesmer 'both': 2,
        whole-cell first). Wall and CPU seconds per stage add into `self.timings` /
        `self.cpu_timings` (keys `resize`, `pre`, `tile`, `predict`, `untile`, `postprocess`;
        `predict` CPU is the client's encode/decode). A run is recorded in `self.apps_run`.
        """
        name, version = parse_model(model)
        model_in = self.model_input(name, version)
        image = np.asarray(image_bxyc)
        if image.ndim != 4:
            raise ValueError(f"run_app needs a (B, X, Y, C) image, got shape {image.shape}")
        if model_in.channels != spec.channels:
            raise UserError(f"Model {name}:{version} takes {model_in.channels} channel(s) but the {spec.name} "
                            f"application feeds it {spec.channels}; check the model setting.")
        if image.shape[-1] != spec.channels:
            raise UserError(f"The {spec.name} application needs {spec.channels} channel(s) but got "
                            f"{image.shape[-1]}; check the job's channels field.")
        image_mpp = float(scale) * spec.model_mpp
        wall: dict[str, np.ndarray] = {}
        found: list[np.ndarray] = []
        try:
            labels = self._run(spec, image, model_in, self.predict_tiles(name, version), image_mpp,
                               overrides, compartment, wall, found)
        except ValueError as exc:  # the pipeline's one-sentence complaints are about this input
            raise UserError(f"The {spec.name} application could not process the image: {exc}.") from None
        if found:  # the watershed's own numbering: what object_counts would count
            for k in range(labels.shape[-1]):
                self._remember_counts(labels[..., k], [int(n) for n in found[0][:, k]])
        for stage, (w, c) in wall.items():
            self.timings[stage] = round(self.timings.get(stage, 0.0) + float(w), 6)
            self.cpu_timings[stage] = round(self.cpu_timings.get(stage, 0.0) + float(c), 6)
        self.apps_run.append({
            "application": spec.name, "model": f"{name}:{version}", "model_mpp": spec.model_mpp,
            "image_mpp": image_mpp, "scale": float(scale), "tile_shape": list(model_in.tile),
            "compartments": list(spec.select(compartment)),
            "postprocess": {c: spec.postprocess_kwargs(c, overrides) for c in spec.select(compartment)},
        })
        return labels

    def _run(self, spec: AppSpec, image: np.ndarray, model_in: ModelInput, predict: Callable,
             image_mpp: float, overrides: Any, compartment: str | None, wall: dict,
             found: list | None = None) -> np.ndarray:
        # the pipeline imports the deep watershed (scipy, scikit-image): only jobs that run one pay
        from ..deepcell.pipeline import run_application

        tile = model_in.tile
        common = {"tile_shape": tile, "batch_size": self.app_batch_size, "overrides": overrides,
                  "compartment": compartment, "timings": wall, "timer": _stopwatch}
        new_shape = scaled_shape(image.shape, image_mpp, spec.model_mpp)
        scaled = new_shape or image.shape[1:3]
        short = [scaled[i] < tile[i] for i in (0, 1)]
        if not (spec.takes_uint16 and image.dtype == np.uint16 and new_shape is None and all(short) == any(short)):
            # The kiosk casts every input to float32. An application whose preprocessing reads
            # uint16 as those values is handed a uint16 image uncast (no 4 MB/MP copy) when it
            # is neither resized nor padded here first.
            image = image.astype(np.float32, copy=False)
        limit = 4 * int(self.settings.MAX_IMAGE_HEIGHT) * int(self.settings.MAX_IMAGE_WIDTH)
        if scaled[0] * scaled[1] > limit:  # a 2048x2048 image at scale 10 would need ~1.7 GB per channel
            raise UserError(f"The job's scale {image_mpp / spec.model_mpp:g} would make the image {scaled[0]}x"
                            f"{scaled[1]} pixels for the model, more than 4x MAX_IMAGE_HEIGHT x MAX_IMAGE_WIDTH; "
                            "use a smaller scale.")
        if min(scaled) < 1:
            raise UserError(f"The job's scale {image_mpp / spec.model_mpp:g} shrinks the "
                            f"{image.shape[1]}x{image.shape[2]} image to nothing; use a larger scale.")
        if tuple(scaled) != tuple(image.shape[1:3]):
            self.log_job(f"rescaled by {image_mpp / spec.model_mpp:g} to {scaled[0]}x{scaled[1]} for the model")
        if any(short) and not all(short):
            # The application pads BOTH axes by |size - tile| when either is short, so the long
            # axis stops being a multiple of tiles and a fixed-shape model refuses it (the kiosk
            # fails such images; deepcell-tf application.py:174-187). Pad only the short axis to
            # the tile, by reflection as the application would, and crop the labels back.
            t0 = time.perf_counter(), time.process_time()
            resized = resize_input(image, image_mpp, spec.model_mpp)
            pads = [(0, 0)] * 4
            for axis in (1, 2):
                diff = max(0, tile[axis - 1] - resized.shape[axis])
                pads[axis] = (diff // 2, diff - diff // 2)
            padded = np.pad(resized, pads, mode="reflect")
            _add(wall, "resize", t0)
            labels = run_application(spec, padded, predict, image_mpp=None, **common)
            labels = labels[:, pads[1][0]:pads[1][0] + resized.shape[1], pads[2][0]:pads[2][0] + resized.shape[2]]
            t0 = time.perf_counter(), time.process_time()
            labels = resize_labels(np.ascontiguousarray(labels), image.shape[1:3])
            _add(wall, "resize", t0)
            return labels
        return run_application(spec, image, predict, image_mpp=image_mpp, counts=found, **common)

    def stage_fields(self) -> dict[str, float]:
        """`preprocess_time` (resize, normalise, tile) and `postprocess_time` (untile, deep
        watershed), in seconds, from the application's stage timings."""
        t = self.timings
        return {"preprocess_time": round(t.get("resize", 0) + t.get("pre", 0) + t.get("tile", 0), 6),
                "postprocess_time": round(t.get("untile", 0) + t.get("postprocess", 0), 6),
                "zip_time": round(t.get("zip", 0.0), 6)}

    def kiosk_hash_fields(self, job: Any = None) -> dict[str, Any]:
        """Fields kiosk-client reports (KC manager.py:252-294): `prediction_time` (= our
        `predict_time`, the job's predict stage, when `job` is given) and `predict_retries`."""
        seconds = (job.timings if job is not None else self.timings).get("predict", 0.0)
        return {"prediction_time": round(seconds, 6),
                "predict_retries": int(self.predict_retries)}


def _add(wall: dict, stage: str, start: tuple[float, float]) -> None:
    now = np.array([time.perf_counter(), time.process_time()])
    wall[stage] = wall.get(stage, 0.0) + (now - np.array(start))


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")" if shape else "unknown"

