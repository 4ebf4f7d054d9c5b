"""The `segmentation` consumer (also `image`) as the kiosk runs it (KRC consumers/segmentation_consumer.py:135-225).

The input is laid out by the kiosk's `dimension_order` rules (`utils/kiosk_layout.py`; '' = the
automatic choice), `channels` names model slots (0 nuclear -> NUCLEAR_MODEL with the
NuclearSegmentation application, 1 cytoplasm -> CYTOPLASM_MODEL, 2 phase -> PHASE_MODEL, both with
the CytoplasmSegmentation application; KRC settings.py:132-142), one label image per filled slot,
stacked in slot order; `scale` gives `image_mpp = scale x model_mpp`; `label` is read and ignored.

Where we differ on purpose: a non-empty job `model_name` replaces the slot-0 model (the kiosk
ignores it; its page sends ''), and a `model_name` naming a single-head, any-size model (the dev
server's old `NuclearSegmentation:1` demo model) takes the threshold fallback of
`threshold_segmentation.py` instead of the DeepCell application.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..deepcell.apps import CytoplasmSegmentation, NuclearSegmentation
from ..storage import output_key
from ..utils import image_io, tempdirs
from ..utils.kiosk_layout import (
    SLOT_NAMES,
    load_for_kiosk,
    parse_label,
    parse_scale,
    parse_segmentation_channels,
)
from ..utils.labels import compact_type
from .base import Job
from .deepcell_base import DeepCellConsumer, kiosk_name
from .tfserving_consumer import TensorFlowServingConsumer, parse_model, wire_version

#: Per slot: the setting naming its model and the application it runs (KRC settings.py:132-142).
SLOTS = (("NUCLEAR_MODEL", NuclearSegmentation), ("CYTOPLASM_MODEL", CytoplasmSegmentation),
         ("PHASE_MODEL", CytoplasmSegmentation))


class SegmentationConsumer(DeepCellConsumer):
    """Kiosk segmentation: NuclearSegmentation / CytoplasmSegmentation per `channels` slot."""

    name = "segmentation"
    #: Both paths label with scipy.ndimage; the rest of `app_modules` (scikit-image, ~20 MB) is
    #: left to the first job that runs an application: a demo-model job never does, and warming
    #: it first would only move the same CPU ahead of the claim.
    warm_modules = (*TensorFlowServingConsumer.warm_modules, "redis_consumer.consumers.threshold_segmentation",
                    "redis_consumer.utils.overlay", "scipy.ndimage")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: SEGMENTATION_POSTPROCESS, for every slot's application.
        self.overrides = self.postprocess_overrides("SEGMENTATION_POSTPROCESS", NuclearSegmentation,
                                                    CytoplasmSegmentation)

    def slot_models(self, fields: Mapping[str, str]) -> list[str]:
        """`NAME:VERSION` per slot; the job's non-empty `model_name` replaces slot 0's."""
        models = [str(getattr(self.settings, setting)) for setting, _app in SLOTS]
        if (fields.get("model_name") or "").strip():
            name, version = self.model_for(fields)
            models[0] = f"{name}:{version}"
        return models

    def warm_models(self) -> list[str]:
        """Slot 0's model (NUCLEAR_MODEL): what a job naming no model runs first."""
        return self.slot_models({})[:1]

    def is_threshold_model(self, model: str) -> bool:
        """True for a single-output model without fixed tiles: the old demo model's signature."""
        name, version = parse_model(model)
        meta = self.tf.get_metadata(name, wire_version(version), deadline=self.check_deadline())
        inputs, outputs = dict(meta.inputs or {}), dict(getattr(meta, "outputs", {}) or {})
        if len(inputs) != 1 or len(outputs) > 1:
            return False
        shape = tuple(next(iter(inputs.values())).shape)
        return len(shape) == 4 and (shape[1] <= 0 or shape[2] <= 0)

    def consume(self, job: Job) -> dict[str, Any]:
        self.begin_job()
        fields = job.fields
        models = self.slot_models(fields)
        if (fields.get("model_name") or "").strip() and self.is_threshold_model(models[0]):
            return self._threshold(job)
        with tempdirs.scratch() as workdir:
            return self._consume_kiosk(job, fields, models, workdir)

    def _threshold(self, job: Job) -> dict[str, Any]:
        from .threshold_segmentation import ThresholdSegmentation

        fallback = ThresholdSegmentation(self.settings, self.services)
        fallback.job = job
        job.log("model has one head and no fixed tile: threshold fallback (demo model)")
        try:
            return fallback.consume(job)
        finally:
            fallback.job = None

    def _consume_kiosk(self, job: Job, fields: Mapping[str, str], models: list[str], workdir: str) -> dict[str, Any]:
        folder, name = kiosk_name(fields)
        shown_name = fields.get("original_name") or os.path.basename(fields.get("input_file_name", ""))
        with job.stage("download"):
            path = self.storage.download(fields["input_file_name"], workdir, deadline=job.check_deadline(),
                                         read_only=True)
            image, layout = load_for_kiosk(path, fields.get("dimension_order"),
                                           image_io.Limits.from_settings(self.settings), name=shown_name)
            slots = parse_segmentation_channels(fields.get("channels"), image.shape[-1], shown_name)
            scale = parse_scale(fields.get("scale"))
            parse_label(fields.get("label"))  # accepted, unused (KRC segmentation_consumer.py:47-87)
            job.log(f"loaded {'x'.join(map(str, layout.input_shape))} as {layout.order}"
                    f"{' (automatic)' if layout.auto else ''}: {image.shape[0]} batch(es) of "
                    f"{image.shape[1]}x{image.shape[2]}, {image.shape[3]} channel(s)")
        outputs: list[np.ndarray] = []
        with job.stage("predict"):
            for done, (slot, channel) in enumerate(slots.items()):
                _setting, app = SLOTS[slot]
                job.log(f"slot {slot} ({SLOT_NAMES[slot]}): channel {channel} -> {models[slot]} ({app.name}), "
                        f"scale {scale:g}")
                outputs.append(self.run_app(app, image[..., channel:channel + 1], models[slot], scale=scale,
                                            overrides=self.overrides))
                job.progress(10 + 80 * (done + 1) / len(slots))
        labels = self.join_labels(outputs)  # (B, X, Y, filled slots), slot order
        counts = {SLOT_NAMES[s]: labels[..., k] for k, s in enumerate(slots)}
        job.log("found " + ", ".join(f"{int(sum(n))} {c}" for c, n in self.object_counts(counts).items()))
        outdir = os.path.join(workdir, "out")
        prefix = os.path.join(folder, name) if folder else name
        with job.stage("save"):
            files = self.save_kiosk_tiffs(labels, outdir, prefix, "segmentation")
            restored = layout.restore(labels)
            labels_path = os.path.join(outdir, f"{prefix}_labels.tif")
            with self._step("tiff"):
                files.append(self.tiff_member(labels_path, restored, compact_type(restored)))
            for k, slot in enumerate(slots):
                files.append(self.save_overlay(image[0, ..., slots[slot]], labels[0, ..., k], outdir, prefix,
                                               SLOT_NAMES[slot]))
            summary = self.results_summary(
                job.key, fields, counts, input_shape=list(layout.input_shape), dimension_order=layout.order,
                dimension_order_auto=layout.auto, label_shape=list(restored.shape),
                channels={SLOT_NAMES[s]: c for s, c in slots.items()}, scale=scale,
                models={SLOT_NAMES[s]: models[s] for s in slots},
                files=sorted(os.path.relpath(p, outdir).replace(os.sep, "/") for p in files),
            )
            zip_path = self.write_result_zip(os.path.join(workdir, "result.zip"), outdir, files, summary)
        with job.stage("upload"):
            key, url = self.storage.upload(zip_path, output_key(job.key), deadline=job.check_deadline(), move=True)
        total = int(sum(summary["object_count"].values()))
        return {"output_url": url, "output_file_name": key, "total_jobs": 1, "object_count": total,
                **{f"{c}_count": n for c, n in summary["object_count"].items()},
                **self.stage_fields(), **self.kiosk_hash_fields(job)}
