"""The `polaris` consumer (also `spot`): spots of one channel, optionally assigned to segmented cells.

kiosk-redis-consumer 0.17.2 (KRC consumers/polaris_consumer.py:97-384) only orchestrates: it
pushes the spots channel to a `spot` child queue and the nuclear / cytoplasm channels to
`segmentation` or `mesmer` child queues, polls them, then writes per batch `{name}_{i}.csv`
(x, y[, cellID0[, cellID1]]) and the label images `{name}_batch_{i}_feature_{c}.tif`. Here
everything runs IN-PROCESS with the same applications and models: no child hashes to create,
poll or expire (kiosk quirk Q15), no extra queues or workers, the worker is never blocked on
other workers, and label channels follow the slot order (nuclei = cellID0, cytoplasm = cellID1;
the kiosk orders them by which child finished first, quirk Q12).

Spot detection is the deepcell-spots 0.3.2 application as the kiosk's spot consumer runs it
(KRC consumers/spot_consumer.py:96-192): min-max normalise (POLARIS_CLIP), tile at the model's
tile with reflect padding, untile both heads, peaks of P(spot) above POLARIS_THRESHOLD with
min_distance 1 plus the regression offsets (redis_consumer/deepcell/spots.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..deepcell import spots as spot_lib
from ..errors import UserError, quote
from ..utils import image_io, kiosk_layout, tempdirs
from .base import Job
from .deepcell_base import DeepCellConsumer, kiosk_name
from .tfserving_consumer import parse_model

SEGMENTATION_TYPES = ("none", "cell culture", "tissue")
SLOT_ROLES = ("spots", "nuclear", "cytoplasm")
OUTLINE_RGB = (255, 255, 0)


def parse_channels(field: str | None, n_channels: int, name: str) -> dict[int, int]:
    """Slot -> image channel: slot 0 spots, 1 nuclear, 2 cytoplasm (polaris_consumer.py:106-164).

    An empty field means "0" (the kiosk's default, L118-121); an empty entry skips its slot."""
    text = (field or "").strip() or "0"
    entries = [e.strip() for e in text.split(",")]
    if len(text) > 64 or len(entries) > len(SLOT_ROLES):
        raise UserError(f"The job's channels field {quote(text)} has {len(entries)} entries but polaris takes at "
                        "most 3 (spots, nuclear, cytoplasm), e.g. '0,1,2'.")
    if not entries[0]:
        raise UserError(f"The job's channels field {quote(text)} leaves the spots channel (first entry) empty; "
                        "give e.g. '0' or '0,1,2'.")
    slots: dict[int, int] = {}
    for slot, entry in enumerate(entries):
        if not entry:
            continue
        if not (entry.isascii() and entry.isdigit()) or int(entry) >= n_channels:
            raise UserError(f"The job's channels field {quote(text)} asks for channel {quote(entry)} as the "
                            f"{SLOT_ROLES[slot]} channel but the image {name!r} has {n_channels} channel(s), "
                            "numbered from 0.")
        slots[slot] = int(entry)
    return slots


def segmentation_type(field: str | None, slots: Mapping[int, int]) -> str:
    """`none`, `cell culture` or `tissue`; an empty field (kiosk-client sends none, Q4) is
    `cell culture` when the channels name a nuclear or cytoplasm slot, else `none`."""
    text = (field or "").strip().lower()
    if not text:
        return "cell culture" if (1 in slots or 2 in slots) else "none"
    if text not in SEGMENTATION_TYPES:
        raise UserError(f"The job's segmentation_type {quote(field)} is not one polaris knows; use none, "
                        "cell culture or tissue.")
    if text == "cell culture" and not (1 in slots or 2 in slots):
        raise UserError("Segmentation type 'cell culture' needs a nuclear or cytoplasm channel in the channels "
                        "field (spots, nuclear, cytoplasm), e.g. '0,1,2' or '0,1'; use none for spots only.")
    if text == "tissue" and not (1 in slots and 2 in slots):
        raise UserError("Segmentation type 'tissue' needs both a nuclear and a cytoplasm channel in the channels "
                        "field (spots, nuclear, cytoplasm), e.g. '0,1,2'.")
    return text


def pad_to_tile(image: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """Reflect-pad (B, X, Y, C) at the high end of any axis shorter than the tile, so that every
    request to the fixed-shape model is tile-sized (the application would pad both axes by the
    absolute difference, deepcell-tf application.py:174-187); points found there are dropped."""
    px, py = max(0, tile[0] - image.shape[1]), max(0, tile[1] - image.shape[2])
    if not (px or py):
        return image
    return np.pad(image, ((0, 0), (0, px), (0, py), (0, 0)), mode="reflect")


class PolarisConsumer(DeepCellConsumer):
    """Spot detection with POLARIS_MODEL plus in-process segmentation and spot-to-cell assignment."""

    name = "polaris"
    #: The kiosk's `spot` queue: segmentation_type is ignored (always none).
    spots_only = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from ..deepcell import apps

        super().__init__(*args, **kwargs)
        # the kiosk's children run in its segmentation and mesmer consumers: the same overrides
        self.overrides = {
            "segmentation": self.postprocess_overrides("SEGMENTATION_POSTPROCESS", apps.NuclearSegmentation,
                                                       apps.CytoplasmSegmentation),
            "tissue": self.postprocess_overrides("MESMER_POSTPROCESS", apps.Mesmer),
        }

    def consume(self, job: Job) -> dict[str, Any]:
        self.begin_job()
        with tempdirs.scratch() as workdir:
            return self._polaris(job, workdir)

    # -- the flow ---------------------------------------------------------------------------
    def _polaris(self, job: Job, workdir: str) -> dict[str, Any]:
        started = time.perf_counter()
        fields, settings = job.fields, self.settings
        name = fields.get("original_name") or os.path.basename(fields["input_file_name"])
        with job.stage("download"):
            path = job.services.storage.download(fields["input_file_name"], workdir, deadline=job.check_deadline())
            # polaris ignores dimension_order and reads channels from the last axis
            # (polaris_consumer.py:104-130): the automatic kiosk layout does the same for the
            # layouts that work there, and names the fix for the ones that do not
            image, _layout = kiosk_layout.load_for_kiosk(path, "", image_io.Limits.from_settings(settings),
                                                         name=name)
        slots = parse_channels(fields.get("channels"), image.shape[-1], name)
        kind = "none" if self.spots_only else segmentation_type(fields.get("segmentation_type"), slots)
        slots = {0: slots[0]} if kind == "none" else slots
        job.log(f"loaded {name}: {image.shape[0]} image(s) {image.shape[1]}x{image.shape[2]}, "
                f"{image.shape[3]} channel(s); segmentation {kind}, channel slots {slots}")
        with job.stage("predict"):
            coords = self.detect_spots(image[..., slots[0]], job)
            job.progress(50 if kind != "none" else 90)
            labels, seg_models = self.segment(image, slots, kind, job)
        with job.stage("save"):
            outdir = os.path.join(workdir, "out")
            files, counts = self.save(outdir, fields, image[..., slots[0]], coords, labels)
            summary = {
                "job": job.key,
                "original_name": name,
                "input_shape": list(image.shape),
                "segmentation_type": kind,
                "channels": {SLOT_ROLES[s]: c for s, c in slots.items()},
                "spot_model": settings.POLARIS_MODEL,
                "segmentation_models": seg_models,
                "threshold": settings.POLARIS_THRESHOLD,
                "clip": settings.POLARIS_CLIP,
                "min_distance": spot_lib.SPOT_MIN_DISTANCE,
                "segmentation_scale": settings.POLARIS_SCALE if kind != "none" else None,
                "spot_count": int(sum(len(c) for c in coords)),
                "spots_per_image": [len(c) for c in coords],
                **counts,
                "applications": list(self.apps_run),
                "predict_retries": self.predict_retries,
                "stage_timings": {k: round(v, 6) for k, v in job.timings.items()},
            }
            zip_path = self.write_result_zip(os.path.join(workdir, "result.zip"), outdir, files, summary)
        with job.stage("upload"):
            from ..storage import output_key

            key, url = job.services.storage.upload(zip_path, output_key(job.key), deadline=job.check_deadline())
        job.log(f"{summary['spot_count']} spot(s) in {len(coords)} image(s) with {settings.POLARIS_MODEL}; "
                f"total {time.perf_counter() - started:.2f}s")
        return {"output_url": url, "output_file_name": key, "total_jobs": 1, "spot_count": summary["spot_count"],
                **self.stage_fields(), **self.kiosk_hash_fields(job)}

    # -- spots ------------------------------------------------------------------------------
    def detect_spots(self, planes: np.ndarray, job: Job) -> list[np.ndarray]:
        """(B, X, Y) spot channel -> one (N_i, 2) [row, col] array per image."""
        from ..deepcell.pipeline import predict_in_batches
        from ..deepcell.tiling import tile_input, untile

        settings = self.settings
        model, version = parse_model(settings.POLARIS_MODEL)
        model_in = self.model_input(model, version)
        if model_in.channels != 1:
            raise UserError(f"Model {settings.POLARIS_MODEL} takes {model_in.channels} channels but spot detection "
                            "feeds it one; check POLARIS_MODEL.")
        tile = model_in.tile
        height, width = planes.shape[1:3]
        x = spot_lib.spot_preprocess(planes[..., None], clip=settings.POLARIS_CLIP)
        tiles, info = tile_input(pad_to_tile(x, tile), tile, pad_mode="reflect")
        heads = predict_in_batches(tiles.astype(np.float32, copy=False), self.predict_tiles(model, version),
                                   self.app_batch_size)
        if len(heads) != 2 or any(h.shape[-1] < 2 for h in heads):
            raise UserError(f"Model {settings.POLARIS_MODEL} returned {len(heads)} output(s) but spot detection "
                            "needs classification and offset_regression with 2 channels each; check POLARIS_MODEL.")
        classification, offsets = (untile(h, info)[:, :height, :width] for h in heads)  # sorted names
        points = spot_lib.spot_points_batch(classification, offsets, settings.POLARIS_THRESHOLD,
                                            spot_lib.SPOT_MIN_DISTANCE)
        return [p[(p[:, 0] > -1) & (p[:, 0] < height) & (p[:, 1] > -1) & (p[:, 1] < width)] for p in points]

    # -- segmentation -----------------------------------------------------------------------
    def segment(self, image: np.ndarray, slots: Mapping[int, int], kind: str,
                job: Job) -> tuple[np.ndarray | None, dict[str, str]]:
        """(B, X, Y, K) labels in slot order (cell culture) or Mesmer's compartments (tissue)."""
        from ..deepcell import apps

        settings = self.settings
        scale = settings.POLARIS_SCALE  # every polaris child gets scale=POLARIS_SCALE (L55-95)
        if kind == "none":
            return None, {}
        if kind == "tissue":
            stack = image[..., [slots[1], slots[2]]]
            labels = self.run_app(apps.Mesmer, stack, settings.MESMER_MODEL, scale=scale,
                                  overrides=self.overrides["tissue"], compartment=settings.MESMER_COMPARTMENT)
            return labels, {"tissue": settings.MESMER_MODEL}
        parts, models = [], {}
        for slot, spec, setting in ((1, apps.NuclearSegmentation, "NUCLEAR_MODEL"),
                                    (2, apps.CytoplasmSegmentation, "CYTOPLASM_MODEL")):
            if slot in slots:
                model_text = getattr(settings, setting)
                parts.append(self.run_app(spec, image[..., [slots[slot]]], model_text, scale=scale,
                                          overrides=self.overrides["segmentation"]))
                models[SLOT_ROLES[slot]] = model_text
                job.progress(50 + 20 * len(parts))
        return np.concatenate(parts, axis=-1), models

    # -- results ----------------------------------------------------------------------------
    def save(self, outdir: str, fields: Mapping[str, str], planes: np.ndarray, coords: list[np.ndarray],
             labels: np.ndarray | None) -> tuple[list[str], dict[str, Any]]:
        """The kiosk's files per image i (polaris_consumer.py:236-335) plus our overlay PNG."""
        os.makedirs(outdir, exist_ok=True)
        folder, name = kiosk_name(fields)
        base = f"{folder}/{name}" if folder else name
        if folder:
            os.makedirs(os.path.join(outdir, folder), exist_ok=True)
        files: list[str] = []
        counts: dict[str, Any] = {}
        if labels is not None:
            counts["cells_per_image"] = [[int(len(np.unique(labels[i, ..., k])) - (labels[i, ..., k] == 0).any())
                                          for k in range(labels.shape[-1])] for i in range(labels.shape[0])]
            counts["spots_in_cells"] = []
            files += self.save_kiosk_tiffs(labels, outdir, base, "segmentation")  # {base}_batch_{i}_feature_{c}
        for i, points in enumerate(coords):
            if labels is not None:
                counts["spots_in_cells"].append(int((spot_lib.assign_spots(points, labels[i])[:, 0] > 0).sum()))
            path = os.path.join(outdir, f"{base}_{i}.csv")
            with open(path, "w", newline="") as fh:
                fh.write(spot_lib.spots_csv(points, None if labels is None else labels[i]))
            files.append(path)
            path = os.path.join(outdir, f"{base}_{i}_spots.png")
            with open(path, "wb") as fh:
                fh.write(overlay_png(planes[i], points, None if labels is None else labels[i]))
            files.append(path)
        return files, counts


def overlay_png(plane: np.ndarray, points: np.ndarray, labels: np.ndarray | None) -> bytes:
    """The spots (magenta, as the kiosk's spot plot) on the image, with cell outlines in yellow."""
    import io

    from PIL import Image

    from ..utils import overlay

    if labels is None:  # an 8-bit palette PNG: ~5x cheaper to encode than RGB
        return spot_lib.spots_overlay_png(plane, points)
    rgb = spot_lib.spots_overlay(plane, points)
    if labels is not None:
        edges = np.zeros(plane.shape, dtype=bool)
        for k in range(labels.shape[-1]):
            edges |= overlay.outlines(labels[..., k])
        spot_pixels = (rgb == np.asarray(spot_lib.SPOT_RGB, dtype=np.uint8)).all(axis=-1)
        rgb[edges & ~spot_pixels] = OUTLINE_RGB
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class SpotConsumer(PolarisConsumer):
    """The kiosk's `spot` queue, polaris's child (KRC consumers/spot_consumer.py:48-192): spots of
    channel slot 0 only, saved per image i as `{name}_{i}.npy` ((N, 2) float64 [row, col], as the
    kiosk) and `{name}_{i}.tif` (the image with the spots drawn, RGB; the kiosk renders a
    matplotlib scatter there), plus results.json."""

    name = "spot"
    spots_only = True

    def save(self, outdir: str, fields: Mapping[str, str], planes: np.ndarray, coords: list[np.ndarray],
             labels: np.ndarray | None) -> tuple[list[str], dict[str, Any]]:
        import tifffile

        os.makedirs(outdir, exist_ok=True)
        folder, name = kiosk_name(fields)
        base = os.path.join(outdir, folder, name) if folder else os.path.join(outdir, name)
        os.makedirs(os.path.dirname(base), exist_ok=True)
        files: list[str] = []
        for i, points in enumerate(coords):
            np.save(f"{base}_{i}.npy", np.asarray(points, dtype=np.float64), allow_pickle=False)
            tifffile.imwrite(f"{base}_{i}.tif", spot_lib.spots_overlay(planes[i], points), photometric="rgb")
            files += [f"{base}_{i}.npy", f"{base}_{i}.tif"]
        return files, {}
