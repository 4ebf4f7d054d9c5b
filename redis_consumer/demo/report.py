"""After the run: check every output zip, summarise timings and draw the montage.

A result zip is valid when it opens, every entry passes its CRC check and it holds a label
image that decodes; the demo's exit code depends on it. The montage shows inputs with the
segmentation outlines, read back from the result zips (what a user would download).
"""

from __future__ import annotations

import io
import statistics
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..cli.common import human_seconds, table
from ..queue import keys as queue_keys
from ..utils.timestamps import parse_iso

STAGE_FIELDS = ("download_time", "predict_time", "postprocess_time", "upload_time", "total_time")


@dataclass
class JobRecord:
    key: str
    fields: dict[str, str]
    kind: str  # image | zip | child
    zip_ok: bool = False
    zip_problem: str = ""
    labels: np.ndarray | None = None
    local_zip: Path | None = None

    @property
    def status(self) -> str:
        return self.fields.get("status", "missing")

    def latency(self) -> float | None:
        try:
            return parse_iso(self.fields["finished_at"]).timestamp() - parse_iso(self.fields["created_at"]).timestamp()
        except (KeyError, ValueError):
            return None


@dataclass
class Report:
    jobs: list[JobRecord] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.jobs) and all(j.status == "done" and j.zip_ok for j in self.jobs)


def collect(client: Any, keys: list[str]) -> list[JobRecord]:
    """The submitted jobs plus every child a zip job fanned out (`queue_keys.children`)."""
    records: list[JobRecord] = []
    for key in keys:
        fields = client.hgetall(key)
        is_zip = key.split(":", 1)[0].endswith("-zip")
        records.append(JobRecord(key, fields, "zip" if is_zip else "image"))
        if is_zip:
            for child in client.lrange(queue_keys.children(key), 0, -1):
                records.append(JobRecord(child, client.hgetall(child), "child"))
    return records


def check_zip(record: JobRecord, storage: Any, dest: Path) -> None:
    """Download the job's result zip into `dest` and validate it; sets zip_ok / zip_problem / labels."""
    name = record.fields.get("output_file_name")
    if record.status != "done":
        record.zip_problem = record.fields.get("reason") or f"status {record.status}"
        return
    if not name:
        record.zip_problem = "no output_file_name"
        return
    dest.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(storage.download(name, str(dest)))
        record.local_zip = local
        with zipfile.ZipFile(local) as zf:
            bad = zf.testzip()
            if bad is not None:
                record.zip_problem = f"entry {bad} fails its CRC check"
                return
            names = zf.namelist()
            if not names:
                record.zip_problem = "empty zip"
                return
            if record.kind != "zip":
                # segmentation: the label image in the input's layout; mesmer: the kiosk's first feature
                label_names = ([n for n in names if n.endswith(("_labels.tif", "_labels.tiff"))]
                               or [n for n in names if n.endswith("_feature_0.tif")])
                if not label_names:
                    record.zip_problem = "no label image in the zip"
                    return
                import tifffile

                record.labels = tifffile.imread(io.BytesIO(zf.read(label_names[0])))
        record.zip_ok = True
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        record.zip_problem = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - storage errors are reported per job, not raised
        record.zip_problem = f"{type(exc).__name__}: {exc}"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(report: Report) -> dict[str, Any]:
    """Numbers for the table (and `--json`)."""
    images = [j for j in report.jobs if j.kind != "zip"]
    latencies = [v for v in (j.latency() for j in images) if v is not None]
    stages = {}
    for name in STAGE_FIELDS:
        values = [float(j.fields[name]) for j in images if j.fields.get(name)]
        stages[name.replace("_time", "")] = round(statistics.fmean(values), 4) if values else None
    done = sum(1 for j in report.jobs if j.status == "done")
    return {
        "jobs": len(report.jobs),
        "image_jobs": len(images),
        "zip_jobs": len(report.jobs) - len(images),
        "mesmer_jobs": sum(1 for j in images if j.key.split(":", 1)[0].endswith("-mesmer")),
        "done": done,
        "failed": len(report.jobs) - done,
        "valid_zips": sum(1 for j in report.jobs if j.zip_ok),
        "wall_seconds": round(report.wall_seconds, 3),
        "images_per_second": round(len(images) / report.wall_seconds, 3) if report.wall_seconds > 0 else None,
        "latency_p50_seconds": _round(_pct(latencies, 0.5)),
        "latency_p95_seconds": _round(_pct(latencies, 0.95)),
        "mean_stage_seconds": stages,
        "objects_found": sum(int(j.fields.get("object_count") or 0) for j in images),
        "ok": report.ok,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def render(data: dict[str, Any]) -> str:
    rows = [
        ("jobs done / failed", (f"{data['done']} / {data['failed']}  ({data['image_jobs']} images, "
                                f"{data.get('mesmer_jobs', 0)} of them mesmer, {data['zip_jobs']} zip)")),
        ("valid result zips", f"{data['valid_zips']} / {data['jobs']}"),
        ("wall time", human_seconds(data["wall_seconds"])),
        ("throughput", f"{data['images_per_second']} images/s" if data["images_per_second"] else "-"),
        ("job latency p50 / p95", f"{_fmt(data['latency_p50_seconds'])} / {_fmt(data['latency_p95_seconds'])}"),
    ]
    for stage, value in data["mean_stage_seconds"].items():
        rows.append((f"mean {stage} time", _fmt(value)))
    rows.append(("objects found", str(data["objects_found"])))
    return table(("metric", "value"), rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def montage(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path, columns: int = 5, tile: int = 0) -> Path:
    """A grid PNG of inputs (contrast-stretched) with red label outlines, at full resolution by default."""
    from PIL import Image

    from ..utils import overlay

    tile = tile or (max((p[0].shape[-1] for p in pairs), default=256) + 4)
    rows = max(1, -(-len(pairs) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * tile), (20, 20, 20))
    for i, (image, labels) in enumerate(pairs):
        plane = image.astype(np.float32)
        if plane.ndim == 3:  # a two-channel mesmer input: show both channels
            plane = plane.max(axis=-1)
        low, high = np.percentile(plane, (1, 99.8))
        plane = (plane - low) / max(high - low, 1e-6)
        lab = np.asarray(labels)
        while lab.ndim > 2:
            lab = lab[0] if lab.shape[0] == 1 or lab.shape[-1] != 1 else lab[..., 0]
        if lab.shape != plane.shape:
            continue
        rgb = Image.fromarray(overlay.render(plane, lab.astype(np.int64)), mode="RGB")
        if rgb.size != (tile - 4, tile - 4):
            rgb = rgb.resize((tile - 4, tile - 4), Image.NEAREST)
        sheet.paste(rgb, ((i % columns) * tile + 2, (i // columns) * tile + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
