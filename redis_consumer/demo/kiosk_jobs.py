"""The demo's polaris and caliban jobs: one image of spots, one short movie with a division.

Kept apart from the segmentation jobs' report (their counts and checks stay as they are): the
two jobs go to `{queue}-polaris` and `{queue}-caliban`, each served by its own worker; their
result zips are validated for the kiosk's files and their spot and track pictures are added to
the montage as one more row.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .report import JobRecord

#: kind -> (queue suffix, CONSUMER_TYPE, job fields, zip entries every result must hold, picture suffix)
KINDS: dict[str, tuple[str, str, dict[str, str], tuple[str, ...], str]] = {
    "polaris": ("-polaris", "polaris", {"channels": "0,1", "segmentation_type": "cell culture"},
                ("spots_0.csv", "spots_batch_0_feature_0.tif", "results.json"), "_spots.png"),
    "caliban": ("-caliban", "caliban", {}, ("movie_feature_0.tif", "lineage.json", "movie.trk", "results.json"),
                "_tracks.png"),
}


def start_workers(services: Any, queue: str, bucket: str) -> None:
    """One polaris and one caliban worker."""
    for kind, (suffix, consumer, *_rest) in KINDS.items():
        services.start_worker(f"worker-{kind}", queue + suffix, consumer, bucket)


def submit(client: Any, storage: Any, inputs: dict[str, Path], queue: str) -> dict[str, str]:
    """kind -> job key, submitted exactly as `redis-consumer submit` does."""
    from ..cli.submit import submit_file

    return {kind: submit_file(client, storage, inputs[kind], queue + KINDS[kind][0], "", "", KINDS[kind][2])
            for kind in KINDS if kind in inputs}


def check(client: Any, keys: dict[str, str], storage: Any, dest: Path) -> list[JobRecord]:
    """Each job's record, its zip downloaded into `dest` and checked for the kiosk's entries."""
    records = []
    for kind, key in keys.items():
        record = JobRecord(key, client.hgetall(key), kind)
        records.append(record)
        name = record.fields.get("output_file_name")
        if record.status != "done" or not name:
            record.zip_problem = record.fields.get("reason") or f"status {record.status}"
            continue
        dest.mkdir(parents=True, exist_ok=True)
        try:
            record.local_zip = Path(storage.download(name, str(dest)))
            with zipfile.ZipFile(record.local_zip) as zf:
                bad = zf.testzip()
                missing = [n for n in KINDS[kind][3] if n not in zf.namelist()]
            record.zip_problem = (f"entry {bad} fails its CRC check" if bad else
                                  f"no {', '.join(missing)} in the zip" if missing else "")
            record.zip_ok = not record.zip_problem
        except Exception as exc:  # noqa: BLE001 - reported per job, like report.check_zip
            record.zip_problem = f"{type(exc).__name__}: {exc}"
    return records


def pictures(records: list[JobRecord]) -> list[np.ndarray]:
    """The spots overlay and the track montage (RGB) from the result zips."""
    from PIL import Image

    out = []
    for record in records:
        if not record.zip_ok or record.local_zip is None:
            continue
        with zipfile.ZipFile(record.local_zip) as zf:
            for name in zf.namelist():
                if name.endswith(KINDS[record.kind][4]):
                    with Image.open(io.BytesIO(zf.read(name))) as im:
                        out.append(np.asarray(im.convert("RGB")))
    return out


def add_to_montage(path: Path, panels: list[np.ndarray], gap: int = 4) -> Path:
    """Append `panels` as one row under the montage at `path` (made if missing)."""
    from PIL import Image

    if not panels:
        return path
    row_h = max(p.shape[0] for p in panels)
    row_w = sum(p.shape[1] for p in panels) + gap * (len(panels) + 1)
    top = Image.open(path).convert("RGB") if path.exists() else None
    width = max(row_w, top.size[0] if top else 0)
    height = (top.size[1] if top else 0) + row_h + 2 * gap
    sheet = Image.new("RGB", (width, height), (20, 20, 20))
    if top is not None:
        sheet.paste(top, (0, 0))
    x, y = gap, height - row_h - gap
    for panel in panels:
        sheet.paste(Image.fromarray(panel, mode="RGB"), (x, y))
        x += panel.shape[1] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path


def summary(records: list[JobRecord]) -> dict[str, Any]:
    """Per kind: status, zip check, and the headline numbers (spots, tracks, divisions)."""
    out: dict[str, Any] = {}
    for record in records:
        fields = record.fields
        out[record.kind] = {
            "key": record.key, "status": record.status, "valid_zip": record.zip_ok,
            "problem": record.zip_problem or None, "latency_seconds": record.latency(),
            **{k: int(fields[k]) for k in ("spot_count", "track_count", "division_count") if fields.get(k)},
        }
    return out
