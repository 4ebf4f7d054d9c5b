"""TensorFlowServingConsumer: the download -> load -> predict -> post-process -> zip -> upload flow.

Model consumers subclass this and override the hooks (`preprocess`, `predict`, `postprocess`,
`save`) instead of re-writing the flow, so every model gets the same stage timing, limits,
validation against the model's metadata, deterministic output key and result zip (with the
job's log as `log.txt` and a `results.json`). TensorFlow Serving and the bucket are reached
through lazily created clients, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError
from ..utils import image_io, tempdirs
from .base import Consumer, Job

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What `postprocess` hands to `save`: arrays and the summary that goes in results.json."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    hash_fields: dict[str, Any] = field(default_factory=dict)


#: Result files that are already compressed (deflating them again only costs CPU).
STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".zip", ".gz")


def parse_model(text: str) -> tuple[str, str]:
    """`NAME:VERSION` -> (name, version); a bare NAME means version 1."""
    name, _, version = (text or "").strip().partition(":")
    return name.strip(), (version.strip() or "1")


def wire_version(version: str) -> int | str:
    """Numeric versions go to TF Serving as numbers, labels (e.g. `stable`) as text."""
    return int(version) if str(version).isdigit() and len(str(version)) <= 18 else version  # huge: a label


class TensorFlowServingConsumer(Consumer):
    """Base of consumers that run one image through a model on TensorFlow Serving."""

    name = "tfserving"
    uses_tfserving = True
    required_fields = ("input_file_name",)
    #: Default `NAME:VERSION` when the job names no model; None means the SEGMENTATION_MODEL setting.
    default_model: str | None = None
    #: What a first job imports lazily (image decoding, the TF Serving client and its messages).
    warm_modules = ("tifffile", "redis_consumer.tfserving.client", "redis_consumer.tfserving.tiling")
    #: Seconds the warm-up waits for one model's metadata (a slow server must not hold the worker).
    warm_up_rpc_timeout = 2.0
    #: Compression of the result zip: TIFF labels and PNGs compress well at a cheap level.
    zip_compresslevel = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timings: dict[str, float] = {}
        self.cpu_timings: dict[str, float] = {}

    # -- services --------------------------------------------------------------------------
    @property
    def tf(self):
        """The TF Serving client for TF_HOST:TF_PORT (`self.services.tf`, created on first use)."""
        return self.services.tf

    @tf.setter
    def tf(self, client) -> None:
        self.services.tf = client

    def model_for(self, fields: Mapping[str, str]) -> tuple[str, str]:
        """The job's `model_name`/`model_version`, else the consumer's default model."""
        name = (fields.get("model_name") or "").strip()
        if name:
            if ":" in name and not fields.get("model_version"):
                return parse_model(name)
            return name, (str(fields.get("model_version") or "").strip() or "1")
        return parse_model(self.default_model or self.settings.SEGMENTATION_MODEL)

    def warm_models(self) -> list[str]:
        """`NAME:VERSION` of the models whose metadata the warm-up fetches (the default model)."""
        name, version = self.model_for({})
        return [f"{name}:{version}"]

    def warm_up(self) -> None:
        """The gRPC channel and the default models' metadata (cached for the first job), the
        imports and the bucket client, so the first job pays none of them.

        The metadata calls run in a thread of their own, started first, and so does the bucket's
        first request: they mostly wait on the network (the channel's connect, the servers'
        replies) while this thread imports.
        """
        fetch = threading.Thread(target=self._warm_metadata, name="warm-up-metadata", daemon=True)
        fetch.start()
        try:
            try:
                self._warm_storage()
            except Exception:  # e.g. no credentials: the first job reports it; the imports still help
                log.warning("warm-up: no bucket client", exc_info=True)
            super().warm_up()
        finally:
            fetch.join()  # bounded: warm_up_rpc_timeout per model

    def _warm_storage(self) -> None:
        """The bucket client, then its first request (`warm`) in a thread of its own, not joined:
        the server's answer (and, on a cloud, the TLS handshake and credentials) arrives while the
        imports go on, and a job that starts first simply opens another connection."""
        storage = self.services.storage
        warm = getattr(storage, "warm", None)
        if callable(warm):
            threading.Thread(target=warm, name="warm-up-storage", daemon=True).start()

    def _warm_metadata(self) -> None:
        try:
            self.tf.channel()
            for model in self.warm_models():
                name, version = parse_model(model)
                try:
                    self.tf.get_metadata(name, wire_version(version), deadline=self.warm_up_rpc_timeout)
                except Exception as exc:  # noqa: BLE001 - the first job asks again (and reports it)
                    log.info("warm-up: metadata of %s:%s not fetched (%s)", name, version, type(exc).__name__)
        except Exception:  # no client at all: the first job reports it
            log.warning("warm-up: no TF Serving client", exc_info=True)

    # -- hooks for subclasses --------------------------------------------------------------
    def load(self, path: str, fields: Mapping[str, str]) -> np.ndarray:
        """Read the input as (frames, height, width, channels), honouring kiosk fields."""
        return image_io.load_image(
            path,
            image_io.Limits.from_settings(self.settings),
            channels=fields.get("channels"),
            dimension_order=fields.get("dimension_order"),
            name=fields.get("original_name") or os.path.basename(fields.get("input_file_name", "")),
        )

    def check_against_model(self, image: np.ndarray, metadata: Any, model: str, version: str) -> None:
        """UserError when the image's channel count cannot feed the model."""
        if metadata is None or not getattr(metadata, "inputs", None) or len(metadata.inputs) != 1:
            return
        spec = next(iter(metadata.inputs.values()))
        shape = tuple(getattr(spec, "shape", ()) or ())
        if len(shape) == 4 and shape[-1] not in (-1, None) and int(shape[-1]) != image.shape[-1]:
            raise UserError(
                f"Model {model}:{version} expects {int(shape[-1])} channel(s) but the image has "
                f"{image.shape[-1]}; set the job's channels field (e.g. 0) or upload a matching image."
            )

    def preprocess(self, image: np.ndarray, fields: Mapping[str, str]) -> np.ndarray:
        """Model input from the loaded image (default: float32 unchanged)."""
        return np.asarray(image, dtype=np.float32)

    def predict(self, batch: np.ndarray, model: str, version: str) -> np.ndarray:
        """Run the model over (N, H, W, C) through the tiler, within the job's deadline."""
        from ..tfserving.tiling import predict_tiled

        return predict_tiled(self.tf, model, wire_version(version), batch, deadline=self.check_deadline())

    def check_prediction(self, prediction: Any, batch: np.ndarray, model: str, version: str) -> None:
        """UserError when the model's output cannot belong to `batch` (default: any output is accepted)."""

    def postprocess(self, prediction: np.ndarray, image: np.ndarray, fields: Mapping[str, str]) -> Result:
        """Turn the model output into result arrays and a summary (default: keep the output)."""
        return Result(arrays={"prediction": prediction}, summary={"output_shape": list(prediction.shape)})

    def save(self, result: Result, image: np.ndarray, outdir: str, fields: Mapping[str, str]) -> list[str]:
        """Write result files into `outdir`; return their paths (default: TIFF per array)."""
        import tifffile

        paths = []
        for name, array in result.arrays.items():
            path = os.path.join(outdir, f"{name}.tif")
            tifffile.imwrite(path, array)
            paths.append(path)
        return paths

    # -- the flow --------------------------------------------------------------------------
    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """Add the block's wall and process-CPU seconds to step `name` (nothing if it raises)."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - wall, 6)
        self.cpu_timings[name] = round(self.cpu_timings.get(name, 0.0) + time.process_time() - cpu, 6)

    def consume(self, job: Job) -> dict[str, Any]:
        redis_hash, fields = job.key, job.fields
        self.timings, self.cpu_timings = {}, {}
        model, version = self.model_for(fields)
        with tempdirs.scratch() as workdir:
            return self.run_pipeline(redis_hash, fields, model, version, workdir)

    def run_pipeline(self, redis_hash: str, fields: Mapping[str, str], model: str, version: str,
                     workdir: str) -> dict[str, Any]:
        """Every stage for one job, in `workdir` (removed afterwards)."""
        with self.stage("download"):
            with self._step("download"):
                path = self.storage.download(fields["input_file_name"], workdir, deadline=self.check_deadline())
            with self._step("load"):
                image = self.load(path, fields)
            self.log_job(f"loaded image {image.shape[1]}x{image.shape[2]}, {image.shape[0]} frame(s), "
                         f"{image.shape[3]} channel(s), {image.dtype}")
        retries = getattr(self.tf, "retries", 0)
        with self.stage("predict"):
            metadata = self.tf.get_metadata(model, wire_version(version), deadline=self.check_deadline())
            self.check_against_model(image, metadata, model, version)
            with self._step("preprocess"):
                batch = self.preprocess(image, fields)
            with self._step("model"):
                prediction = self.predict(batch, model, version)
            self.check_prediction(prediction, batch, model, version)
        # the kiosk's name for TF Serving retries during this job (kiosk-client reads it)
        predict_retries = max(0, int(getattr(self.tf, "retries", 0)) - int(retries))
        with self.stage("postprocess"):
            with self._step("postprocess"):
                result = self.postprocess(prediction, image, fields)
            outdir = os.path.join(workdir, "out")
            os.makedirs(outdir, exist_ok=True)
            with self._step("save"):
                files = self.save(result, image, outdir, fields)
            summary = {
                "job": redis_hash,
                "original_name": fields.get("original_name") or fields.get("input_file_name"),
                "model": {"name": model, "version": version},
                "input_shape": list(image.shape),
                "input_dtype": str(image.dtype),
                **result.summary,
                "timings": dict(self.timings),
                "cpu_timings": dict(self.cpu_timings),
            }
            with self._step("zip"):
                zip_path = self.write_zip(os.path.join(workdir, "result.zip"), files, summary)
        with self.stage("upload"):
            from ..storage import output_key

            key, url = self.storage.upload(zip_path, output_key(redis_hash), deadline=self.check_deadline())
        # `total_jobs` is what the kiosk's own consumers report alongside the output
        return {"output_url": url, "output_file_name": key, "total_jobs": 1, "predict_retries": predict_retries,
                **result.hash_fields}

    def write_zip(self, zip_path: str, files: list[str], summary: Mapping[str, Any]) -> str:
        """The result zip: the saved files, results.json and the job's log as log.txt."""
        members = [(os.path.basename(p), p) for p in files]
        return write_members(zip_path, members, lambda: [
            ("results.json", json.dumps(summary, indent=2, default=_jsonable)),
            ("log.txt", "\n".join(self.job_log) + "\n")], level=self.zip_compresslevel)


def write_members(zip_path: str, files: list[tuple[str, Any]], tail: Any, level: int = 1,
                  after_files: Any = None) -> str:
    """A result zip of `files` ((entry name, path or bytes-like) pairs) then `tail()`'s (name, text) members.

    Deflated by ISA-L (`utils.fast_zip`, ~10x less CPU than zipfile's zlib at level 1) and
    stored for already-compressed suffixes; `after_files()` runs between the two parts (the
    caller's timing). An archive needing ZIP64 (>= 4 GiB or 65535 members) is rewritten
    with zipfile.
    """
    from ..utils.fast_zip import FastZipWriter, ZipTooLarge

    try:
        with FastZipWriter(zip_path, level=max(0, min(3, int(level)))) as zf:
            for arcname, source in files:
                packed = arcname.lower().endswith(STORED_SUFFIXES)
                if isinstance(source, str):
                    zf.write(source, arcname, compress=not packed)
                else:  # a member built in memory
                    zf.writestr(arcname, source, compress=not packed)
            if after_files is not None:
                after_files()
            for name, text in tail():
                zf.writestr(name, text)
        return zip_path
    except ZipTooLarge:
        pass
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for arcname, source in files:
            packed = arcname.lower().endswith(STORED_SUFFIXES)  # already compressed: store as is
            method = zipfile.ZIP_STORED if packed else zipfile.ZIP_DEFLATED
            if isinstance(source, str):
                zf.write(source, arcname, method)
            else:
                zf.writestr(arcname, bytes(source), method)
        if after_files is not None:
            after_files()
        for name, text in tail():
            zf.writestr(name, text)
    return zip_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
