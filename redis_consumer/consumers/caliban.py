"""The `caliban` consumer (also `tracking`): a movie in, tracked labels and the lineage out.

kiosk-redis-consumer 0.17.2 (KRC consumers/caliban_consumer.py:53-284) pushes every frame of a
TIFF stack as a child job onto SEGMENTATION_QUEUE, polls them (blocking the worker), then runs
deepcell's CellTracking with the neighbourhood encoder and the inference model over TF Serving.
Here the frames are segmented IN-PROCESS with the NuclearSegmentation application on
NUCLEAR_MODEL: their tiles go to TF Serving in pipelined batches of TF_MAX_BATCH_SIZE, which is
what the child jobs would send anyway, without N child hashes, N uploads, a scale-detection call
per frame, or a worker waiting on other workers (the kiosk never expires those children, Q15).
The tracker is `redis_consumer/deepcell/tracking` with the kiosk's parameters from settings.

* Input: `.tif/.tiff` (T, H, W), or `.trk/.trks` (raw.npy + tracked.npy, used as they are, KRC
  utils.py:163-186). T <= 60 = the kiosk's MAX_IMAGE_FRAMES (KRC settings.py; its page says 64
  and kiosk-console's TF_MAX_BATCH_SIZE makes it 32, quirk Q11), and never more than our
  MAX_IMAGE_FRAMES. `channels`, `dimension_order` and `scale` are ignored (quirk Q18: the page's
  Caliban form keeps them from a previous form).
* Output zip, as the kiosk (caliban_consumer.py:253-273): `{name}_feature_0.tif` (T, H, W) float32
  tracked labels and `lineage.json` at the root; plus `{name}.trk` (lineage.json, raw.npy,
  tracked.npy, deepcell-tracking's layout), `{name}_tracks.png` and `results.json`.
* `progress` moves per frame (segmentation to 50 %, tracking to 95 %); the kiosk leaves it at 0.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..deepcell.tracking import trk
from ..errors import UserError, quote
from ..utils import image_io, kiosk_layout, tempdirs
from .base import Job
from .deepcell_base import DeepCellConsumer, kiosk_name
from .tfserving_consumer import parse_model, wire_version

#: The kiosk's frame limit (KRC settings.py MAX_IMAGE_FRAMES default 60; docs/consumers.md).
KIOSK_MAX_FRAMES = 60
SUFFIXES = (".tif", ".tiff", ".trk", ".trks")
#: The neighbourhood encoder's inputs, in the tracker's positional order (deepcell-models.md 6.3).
NE_INPUTS = ("encoder_app_input", "encoder_morph_input", "encoder_centroid_input", "encoder_adj_input")
#: The inference model's inputs, likewise (deepcell-models.md 6.4).
INF_INPUTS = ("current_embeddings", "current_centroids", "future_embeddings", "future_centroids")


class CalibanConsumer(DeepCellConsumer):
    """Per-frame nuclear segmentation, then CellTracking over TF Serving."""

    name = "caliban"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from ..deepcell import apps

        super().__init__(*args, **kwargs)
        # the kiosk's frames are segmented by its segmentation consumer: the same overrides
        self.overrides = self.postprocess_overrides("SEGMENTATION_POSTPROCESS", apps.NuclearSegmentation)

    def segmentation_model(self) -> str:
        """TRACKING_SEGMENT_MODEL (the kiosk tutorial's name) when set, else NUCLEAR_MODEL."""
        return self.settings.TRACKING_SEGMENT_MODEL or self.settings.NUCLEAR_MODEL

    def frame_limit(self) -> int:
        return min(KIOSK_MAX_FRAMES, int(self.settings.MAX_IMAGE_FRAMES))

    def validate(self, redis_hash: str, fields: Mapping[str, str]) -> None:
        super().validate(redis_hash, fields)
        if _suffix(fields) not in SUFFIXES:
            shown = fields.get("original_name") or fields.get("input_file_name", "")
            raise UserError(f"Caliban tracks a .tif/.tiff movie (frames, height, width) or a .trk/.trks file, "
                            f"not {quote(os.path.basename(shown))}; upload the movie as a multi-page TIFF.")

    def consume(self, job: Job) -> dict[str, Any]:
        self.begin_job()  # the runner has validated the job just before this call
        with tempdirs.scratch() as workdir:
            return self._caliban(job, workdir)

    # -- the flow ---------------------------------------------------------------------------
    def _caliban(self, job: Job, workdir: str) -> dict[str, Any]:
        started = time.perf_counter()
        fields = job.fields
        name = fields.get("original_name") or os.path.basename(fields["input_file_name"])
        job.progress(0)
        with job.stage("download"):
            path = job.services.storage.download(fields["input_file_name"], workdir, deadline=job.check_deadline())
            if _suffix(fields) in (".trk", ".trks"):
                raw, labels = self.load_trk(path, name)
            else:
                raw, labels = self.load_movie(path, name), None
        n_frames = raw.shape[0]
        job.log(f"loaded {name}: {n_frames} frame(s) of {raw.shape[1]}x{raw.shape[2]}"
                + (" with labels (.trk)" if labels is not None else ""))
        segmented = labels is None
        with job.stage("predict"):
            if segmented:
                labels = self.segment_frames(raw, job)
            result = self.track(raw, labels, job)
        with job.stage("save"):
            outdir = os.path.join(workdir, "out")
            files, summary = self.save(outdir, fields, raw, result)
            summary.update(job=job.key, original_name=name, input_shape=list(raw.shape),
                           segmentation_model=self.segmentation_model() if segmented else None,
                           applications=list(self.apps_run), predict_retries=self.predict_retries,
                           stage_timings={k: round(v, 6) for k, v in job.timings.items()})
            zip_path = self.write_result_zip(os.path.join(workdir, "result.zip"), outdir, files, summary)
        with job.stage("upload"):
            from ..storage import output_key

            key, url = job.services.storage.upload(zip_path, output_key(job.key), deadline=job.check_deadline())
        job.log(f"{summary['track_count']} track(s), {summary['division_count']} division(s) over {n_frames} "
                f"frame(s); total {time.perf_counter() - started:.2f}s")
        return {"output_url": url, "output_file_name": key, "total_jobs": 1,
                "track_count": summary["track_count"], "division_count": summary["division_count"],
                **self.stage_fields(), **self.kiosk_hash_fields(job)}

    # -- inputs -----------------------------------------------------------------------------
    def _check_frames(self, n_frames: int, name: str) -> None:
        limit = self.frame_limit()
        if n_frames > limit:
            raise UserError(f"The movie {name!r} has {n_frames} frames but caliban tracks at most {limit} "
                            "(the kiosk's limit); split it into shorter movies.")

    def load_movie(self, path: str, name: str) -> np.ndarray:
        """(T, H, W, 1) float32 from a (T, H, W) TIFF; limits from the header before decoding."""
        header = kiosk_layout.read_kiosk_header(path, name)
        shape = tuple(header.shape)
        if len(shape) == 4 and shape[-1] == 1:
            shape = shape[:3]
        if header.format != "tiff" or len(shape) != 3:
            dims = "x".join(map(str, header.shape))
            raise UserError(f"Caliban needs a 3-D TIFF movie (frames, height, width) but {name!r} is "
                            f"{len(header.shape)}-D ({dims}); save the frames as one multi-page TIFF.")
        self._check_frames(shape[0], name)
        limits = image_io.Limits.from_settings(self.settings)
        image_io.check_limits(image_io.Header(header.format, shape, "QYX", header.dtype), limits, name)
        if header.dtype.kind not in "uifb":
            raise UserError(f"The movie {name!r} has pixel type {header.dtype}; use integer or floating-point pixels.")
        data = image_io.decode_pixels(path, header, name).reshape(shape)
        image_io.check_finite(data, name)
        return data.astype(np.float32)[..., None]  # the kiosk casts every input to float32

    def load_trk(self, path: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """raw (T, H, W, C) float32 and labels (T, H, W, 1) of a .trk/.trks (the first movie of a
        .trks holding one); as the kiosk, the lineage in the archive is not used."""
        limit = int(self.settings.MAX_DECODED_BYTES)
        if os.path.getsize(path) > limit:
            raise UserError(f"The track file {name!r} is larger than MAX_DECODED_BYTES={limit}; split the movie.")
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            loaded = trk.load_trk(data, max_bytes=limit, require_lineage=False)
        except ValueError as exc:
            raise UserError(f"The file {name!r} cannot be tracked: {exc}.") from None
        raw, tracked = np.asarray(loaded.raw), np.asarray(loaded.tracked)
        if name.lower().endswith(".trks") or raw.ndim == 5:
            if raw.ndim != 5 or raw.shape[0] != 1 or tracked.shape[:1] != (1,):
                raise UserError(f"The file {name!r} holds {raw.shape[0] if raw.ndim else 0} movies; caliban tracks "
                                "one movie per job, so upload each as its own .trk.")
            raw, tracked = raw[0], tracked[0]
        raw = raw[..., None] if raw.ndim == 3 else raw
        tracked = tracked[..., None] if tracked.ndim == 3 else tracked
        if raw.ndim != 4 or tracked.shape != raw.shape[:3] + (1,) or tracked.dtype.kind not in "iu":
            raise UserError(f"The file {name!r} has raw {list(raw.shape)} and tracked {list(tracked.shape)} arrays "
                            "but caliban needs raw (frames, height, width[, 1]) and integer labels of the same size.")
        self._check_frames(raw.shape[0], name)
        if raw.shape[-1] != 1:
            raw = raw[..., :1]
        return raw.astype(np.float32), tracked.astype(np.int32)

    # -- segmentation -----------------------------------------------------------------------
    def segment_frames(self, raw: np.ndarray, job: Job) -> np.ndarray:
        """(T, H, W, 1) int32 nuclear labels, NuclearSegmentation on `segmentation_model()`, a few frames
        per call so every call fills at least one TF_MAX_BATCH_SIZE request (progress per call)."""
        from ..deepcell import apps

        model = self.segmentation_model()
        name, version = parse_model(model)
        tile = self.model_tile_shape(name, version)
        stride = max(1, int(tile[0] * 0.75))
        per_frame = math.prod(max(1, math.ceil((s - t) / stride) + 1) for s, t in zip(raw.shape[1:3], tile))
        step = max(1, math.ceil(int(self.settings.TF_MAX_BATCH_SIZE) / per_frame))
        n_frames = raw.shape[0]
        parts = []
        for start in range(0, n_frames, step):
            parts.append(self.run_app(apps.NuclearSegmentation, raw[start:start + step], model,
                                      overrides=self.overrides))
            job.progress(50 * min(n_frames, start + step) / n_frames)
        labels = np.concatenate(parts, axis=0)
        job.log(f"segmented {n_frames} frame(s) with {model}: "
                f"{int(sum(len(np.unique(f)) - 1 for f in labels))} nuclei in all")
        return labels

    # -- tracking ---------------------------------------------------------------------------
    def _model_inputs(self, setting: str, wanted: tuple[str, ...]) -> tuple[str, Any, Any]:
        text = getattr(self.settings, setting)
        name, version = parse_model(text)
        wire = wire_version(version)
        meta = self.tf.get_metadata(name, wire, deadline=self.check_deadline())
        have = set(getattr(meta, "inputs", {}) or {})
        if not set(wanted) <= have:
            raise UserError(f"Model {text} ({setting}) takes inputs {sorted(have)} but caliban sends "
                            f"{', '.join(wanted)}; check {setting}.")
        return name, wire, meta

    def track(self, raw: np.ndarray, labels: np.ndarray, job: Job) -> Any:
        """track_cells with the kiosk's parameters, the two models called over TF Serving."""
        from ..deepcell.tracking.tracker import track_cells

        s = self.settings
        ne, ne_version, ne_meta = self._model_inputs("NEIGHBORHOOD_ENCODER", NE_INPUTS)
        inf, inf_version, _ = self._model_inputs("CALIBAN_MODEL", INF_INPUTS)
        crop = tuple(ne_meta.inputs["encoder_app_input"].shape)
        if len(crop) == 5 and crop[2] > 0 and crop[2] != s.APPEARANCE_DIM:
            raise UserError(f"APPEARANCE_DIM is {s.APPEARANCE_DIM} but {s.NEIGHBORHOOD_ENCODER} takes "
                            f"{crop[2]}x{crop[3]} appearance crops; set APPEARANCE_DIM={crop[2]}.")
        n_frames = raw.shape[0]
        done = [0]

        def encode(app, morph, centroid, adj):  # every frame in one call: the client batches them
            out = self.tf.predict(ne, ne_version, dict(zip(NE_INPUTS, (app, morph, centroid, adj))),
                                  deadline=self.check_deadline())
            return [np.asarray(out[k]) for k in sorted(out)]  # sorted names, as the kiosk (L243)

        def infer(current_e, current_c, future_e, future_c):
            out = self.tf.predict(inf, inf_version, dict(zip(INF_INPUTS, (current_e, current_c, future_e, future_c))),
                                  deadline=self.check_deadline())
            done[0] += 1
            job.progress(50 + 45 * done[0] / max(1, n_frames - 1))
            return [np.asarray(out[k]) for k in sorted(out)]

        try:
            return track_cells(raw, labels, encode, infer, distance_threshold=s.MAX_DISTANCE,
                               appearance_dim=s.APPEARANCE_DIM, birth=s.BIRTH, death=s.DEATH, division=s.DIVISION,
                               track_length=s.TRACK_LENGTH, embedding_axis=1, crop_mode=s.CROP_MODE,
                               norm=s.NORMALIZE_TRACKING)
        except ValueError as exc:  # the models answered in shapes the tracker cannot use
            raise UserError(f"Tracking failed because {exc}; check NEIGHBORHOOD_ENCODER and CALIBAN_MODEL.") from None

    # -- results ----------------------------------------------------------------------------
    def save(self, outdir: str, fields: Mapping[str, str], raw: np.ndarray, result: Any) -> tuple[list[str], dict]:
        import tifffile

        from ..utils import track_montage

        folder, name = kiosk_name(fields)
        base = os.path.join(outdir, folder, name) if folder else os.path.join(outdir, name)
        os.makedirs(os.path.dirname(base), exist_ok=True)
        tracked = result.y_tracked
        paths = [f"{base}_feature_0.tif", os.path.join(outdir, "lineage.json"), f"{base}.trk", f"{base}_tracks.png"]
        tifffile.imwrite(paths[0], tracked.astype(np.float32))
        with open(paths[1], "w") as fh:
            fh.write(trk.lineage_json(result.tracks))
        with open(paths[2], "wb") as fh:
            fh.write(trk.save_trk(result.tracks, raw, tracked[..., None]))
        with open(paths[3], "wb") as fh:
            fh.write(track_montage.montage_png(raw, tracked, result.tracks))
        divisions = [label for label, info in result.tracks.items() if info["daughters"]]
        summary = {
            "frames": int(tracked.shape[0]),
            "track_count": len(result.tracks),
            "division_count": len(divisions),
            "divisions": {str(p): result.tracks[p]["daughters"] for p in divisions},
            "cells_per_frame": [len(np.unique(f[f > 0])) for f in tracked],
            "models": {"neighborhood_encoder": self.settings.NEIGHBORHOOD_ENCODER,
                       "inference": self.settings.CALIBAN_MODEL},
            "parameters": {"distance_threshold": self.settings.MAX_DISTANCE,
                           "appearance_dim": self.settings.APPEARANCE_DIM, "birth": self.settings.BIRTH,
                           "death": self.settings.DEATH, "division": self.settings.DIVISION,
                           "track_length": self.settings.TRACK_LENGTH, "embedding_axis": 1,
                           "crop_mode": self.settings.CROP_MODE, "norm": self.settings.NORMALIZE_TRACKING},
        }
        return paths, summary


def _suffix(fields: Mapping[str, str]) -> str:
    """The input's extension: `input_file_name` as the kiosk checks it (caliban_consumer.py:53-66),
    else `original_name`."""
    for key in ("input_file_name", "original_name"):
        ext = os.path.splitext(str(fields.get(key) or ""))[1].lower()
        if ext in SUFFIXES:
            return ext
    return os.path.splitext(str(fields.get("input_file_name") or ""))[1].lower()
