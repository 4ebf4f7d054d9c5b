"""The `mesmer` consumer (also `multiplex`) as the kiosk runs it (KRC consumers/mesmer_consumer.py:71-158).

Two channels (nuclear, membrane) from `channels` ('' = 0,1), MESMER_MODEL, `compartment` from
the job else MESMER_COMPARTMENT (whole-cell | nuclear | both; output whole-cell first, DC
mesmer.py:135-151), `image_mpp = scale x 0.5`. The kiosk squeezes the image and prepends a batch
axis, ignoring `dimension_order` (mesmer_consumer.py:97-100), and writes `dim_order` (YXC, or
CYX when the smallest non-batch axis is not last; base_consumer.py:253-276). Results are
`{name}_feature_{k}.tif`, (1, H, W) float32 per compartment (base_consumer.py:478-504).

Where we differ on purpose: a channels-first image ((2, H, W), or (B, 2, H, W)) is moved to
channels-last by the kiosk's own rule (the smallest non-batch axis not last: roll axis 1 to the
end, base_consumer.py:278-336) before `channels` picks from it, and an empty `channels` entry
('0,') or a one-channel image is a one-sentence reason instead of a traceback.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..deepcell.apps import Mesmer
from ..errors import UserError
from ..storage import output_key
from ..utils import image_io, tempdirs
from ..utils.kiosk_layout import load_kiosk_image, parse_mesmer_channels, parse_scale
from .base import Job
from .deepcell_base import DeepCellConsumer, kiosk_name

COMPARTMENTS = ("whole-cell", "nuclear", "both")


def mesmer_layout(raw: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """(B, H, W, C) from the kiosk-loaded array, and the `dim_order` the kiosk writes.

    Squeeze, add a batch axis (mesmer_consumer.py:97-100); `dim_order` is 'YXC' when the smallest
    non-batch axis is last, else 'CYX' (base_consumer.py:253-276); a channels-first image then has
    axis 1 rolled to the end (base_consumer.py:301-306).
    """
    image = np.squeeze(raw)
    dims = "x".join(map(str, raw.shape))
    if image.ndim == 2:
        raise UserError(f"The image {name!r} ({dims}) has one channel but mesmer needs two (nuclear and "
                        "membrane); upload a two-channel image or use a segmentation job.")
    if image.ndim not in (3, 4):
        raise UserError(f"The image {name!r} has {image.ndim} dimensions once squeezed ({dims}); mesmer "
                        "takes (H, W, C), (C, H, W) or (B, H, W, C) images.")
    image = image[np.newaxis] if image.ndim == 3 else image
    rest = image.shape[1:]
    channel_axis = rest.index(min(rest)) + 1
    dim_order = "YXC" if channel_axis == image.ndim - 1 else "CYX"
    if dim_order == "CYX":
        image = np.moveaxis(image, 1, -1)
    return image, dim_order


class MesmerConsumer(DeepCellConsumer):
    """Kiosk mesmer: whole-cell and/or nuclear labels from a nuclear + membrane image."""

    name = "mesmer"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: MESMER_POSTPROCESS: parameters for both compartments and/or {"nuclear": {...}}.
        self.overrides = self.postprocess_overrides("MESMER_POSTPROCESS", Mesmer)

    def compartment_of(self, fields: dict[str, str]) -> str:
        value = (fields.get("compartment") or "").strip() or str(self.settings.MESMER_COMPARTMENT)
        if value not in COMPARTMENTS:
            raise UserError(f"The job's compartment {value[:40]!r} is not one mesmer knows; use whole-cell, "
                            "nuclear or both.")
        return value

    def consume(self, job: Job) -> dict[str, Any]:
        self.begin_job()
        with tempdirs.scratch() as workdir:
            return self._run_job(job, workdir)

    def _run_job(self, job: Job, workdir: str) -> dict[str, Any]:
        fields = job.fields
        folder, name = kiosk_name(fields)
        shown_name = fields.get("original_name") or os.path.basename(fields.get("input_file_name", ""))
        model = str(self.settings.MESMER_MODEL)  # the job's model fields are ignored, as in the kiosk
        compartment = self.compartment_of(fields)
        with job.stage("download"):
            path = self.storage.download(fields["input_file_name"], workdir, deadline=job.check_deadline(),
                                         read_only=True)
            raw = load_kiosk_image(path, image_io.Limits.from_settings(self.settings), name=shown_name)
            image, dim_order = mesmer_layout(raw, shown_name)
            nuclear, membrane = parse_mesmer_channels(fields.get("channels"), image.shape[-1], shown_name)
            scale = parse_scale(fields.get("scale"))
            job.update({"dim_order": dim_order})
            job.log(f"loaded {'x'.join(map(str, raw.shape))} as {image.shape[0]} batch(es) of "
                    f"{image.shape[1]}x{image.shape[2]}; nuclear channel {nuclear}, membrane {membrane}; "
                    f"dim_order {dim_order}")
        # (B, H, W, 2): the kiosk stacks, then the application casts to float32 (run_app does, or
        # for uint16 pixels Mesmer's preprocessing reads them as those values: AppSpec.takes_uint16);
        # the usual two-channel image in (nuclear, membrane) order is taken as it is
        pair = image if (image.shape[-1], nuclear, membrane) == (2, 0, 1) else image[..., [nuclear, membrane]]
        with job.stage("predict"):
            labels = self.run_app(Mesmer, pair, model, scale=scale, compartment=compartment,
                                  overrides=self.overrides)
        names = list(Mesmer.select(compartment))
        by_compartment = {c: labels[..., k] for k, c in enumerate(names)}
        job.log("found " + ", ".join(f"{int(sum(n))} {c}" for c, n in self.object_counts(by_compartment).items()))
        outdir = os.path.join(workdir, "out")
        prefix = os.path.join(folder, name) if folder else name
        with job.stage("save"):
            files = self.save_kiosk_tiffs(labels, outdir, prefix, "mesmer")
            for k, comp in enumerate(names):
                plane = image[0, ..., membrane if comp == "whole-cell" else nuclear]  # stored dtype: see grey_levels
                files.append(self.save_overlay(plane, labels[0, ..., k], outdir, prefix, comp))
            summary = self.results_summary(
                job.key, fields, by_compartment, input_shape=list(raw.shape), dim_order=dim_order,
                channels={"nuclear": nuclear, "membrane": membrane}, compartment=compartment, scale=scale,
                files=sorted(os.path.relpath(p, outdir).replace(os.sep, "/") for p in files),
            )
            zip_path = self.write_result_zip(os.path.join(workdir, "result.zip"), outdir, files, summary)
        with job.stage("upload"):
            key, url = self.storage.upload(zip_path, output_key(job.key), deadline=job.check_deadline(), move=True)
        return {"output_url": url, "output_file_name": key, "total_jobs": 1, "dim_order": dim_order,
                "object_count": int(sum(summary["object_count"].values())),
                **{f"{c.replace('-', '_')}_count": n for c, n in summary["object_count"].items()},
                **self.stage_fields(), **self.kiosk_hash_fields(job)}
