"""Polaris (spot detection) postprocessing CPU per megapixel, beside a same-run baseline.

A synthetic image of Gaussian spots at known sub-pixel positions and the heads a perfect spot
model would return for it; then, timed with time.process_time, the worker's own steps:
  preprocess - min_max_normalize of the image (spot_preprocess, clip=False as the kiosk);
  points     - peak_local_max(threshold 0.95, min_distance 1) + offsets (spot_points);
  csv        - spot-to-cell lookup and the kiosk CSV with one label channel (spots_csv);
  overlay    - the spots-over-image PNG (spots_overlay_png);
and the baseline: one `scipy.ndimage.label` of the thresholded P(spot) plane.
Also reports the recovery (within 1 px) so a fast-but-wrong change shows.

`consumer_cpu_ms_per_megapixel` (unless --no-consumer): the whole `polaris` consumer path, one
job through `redis_consumer.testing.run_job` (fakeredis, a file:// bucket) against the dev model
server over gRPC in its own process, so this process's CPU is the worker's: load, normalise,
tile, gRPC encode/decode, untile, points, CSV, overlay, zip; `none` (spots only) and
`cell culture` (plus nuclear segmentation of a second channel at POLARIS_SCALE).

Usage: `python bench/bench_spots.py [--quick] [--size N] [--spots K] [--repeats R]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from redis_consumer.deepcell.spots import (
    SPOT_THRESHOLD,
    spot_points,
    spot_preprocess,
    spots_csv,
    spots_overlay_png,
)
from tests.helpers.synthetic_cells import spot_image, spot_positions


def cpu(fn, *args, **kwargs):
    start = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller image, fewer repeats")
    parser.add_argument("--size", type=int, default=None, help="image side (default 2048, quick 1024)")
    parser.add_argument("--spots", type=int, default=None, help="spots (default 1 per 1000 px^2)")
    parser.add_argument("--repeats", type=int, default=None, help="runs to take the median of (default 5, quick 2)")
    parser.add_argument("--no-consumer", dest="consumer", action="store_false",
                        help="skip the whole-consumer measurement (no dev model server)")
    args = parser.parse_args()
    size = args.size or (1024 if args.quick else 2048)
    n_spots = args.spots or size * size // 1000
    repeats = args.repeats or (2 if args.quick else 5)
    rng = np.random.default_rng(0)
    truth = spot_positions(n_spots, size, rng)
    image, classification, offsets = spot_image(truth, size, rng)
    labels, _ = ndimage.label(ndimage.uniform_filter(image, 9) > 12)  # blobs of spots as "cells"
    megapixels = size * size / 1e6

    steps: dict[str, list[float]] = {k: [] for k in ("preprocess", "points", "csv", "overlay", "ndimage_label")}
    points = np.zeros((0, 2))
    for _ in range(repeats):
        _, t = cpu(spot_preprocess, image[None, ..., None])
        steps["preprocess"].append(t)
        points, t = cpu(spot_points, classification, offsets)
        steps["points"].append(t)
        _, t = cpu(spots_csv, points, labels)
        steps["csv"].append(t)
        _, t = cpu(spots_overlay_png, image, points)
        steps["overlay"].append(t)
        _, t = cpu(ndimage.label, classification[..., 1] > SPOT_THRESHOLD)
        steps["ndimage_label"].append(t)

    distance, _ = cKDTree(truth).query(points)
    per_mp = {k: round(1000 * statistics.median(v) / megapixels, 2) for k, v in steps.items()}
    own = sum(per_mp[k] for k in ("preprocess", "points", "csv", "overlay"))
    result = {
        "benchmark": "spots_cpu",
        "quick": args.quick,
        "image": f"{size}x{size} float32, {n_spots} spots",
        "repeats": repeats,
        "cpu_ms_per_megapixel": {k: per_mp[k] for k in ("preprocess", "points", "csv", "overlay")},
        "cpu_ms_per_megapixel_total": round(own, 2),
        "baseline_cpu_ms_per_megapixel": {"ndimage_label": per_mp["ndimage_label"]},
        "total_over_ndimage_label": round(own / max(per_mp["ndimage_label"], 1e-9), 1),
        "spots_found": len(points),
        "recovered_within_1px": round(float(np.mean(distance <= 1.0)) if len(points) else 0.0, 4),
    }
    if args.consumer:
        result.update(consumer_cpu(image, labels, truth, megapixels, repeats))
    print(json.dumps(result))
    return 0


def consumer_cpu(image: np.ndarray, labels: np.ndarray, truth: np.ndarray, megapixels: float,
                 repeats: int) -> dict:
    """CPU ms per megapixel of whole polaris jobs (this process only; the model server is another)."""
    import io

    import tifffile

    from redis_consumer.consumers.polaris import PolarisConsumer
    from redis_consumer.testing import ModelServer, run_job

    nuclei = np.where(labels > 0, 1000.0, 100.0).astype(np.float32)
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack([image, nuclei], axis=-1))
    data = buf.getvalue()
    out: dict[str, float] = {}
    found = 0
    with ModelServer() as server:
        for kind, channels in (("none", "0"), ("cell culture", "0,1")):
            times = []
            for _ in range(max(1, repeats)):
                start = time.process_time()
                run = run_job(PolarisConsumer, {"channels": channels, "segmentation_type": kind},
                              inputs={"spots.tif": data}, model_server=server.address)
                times.append(time.process_time() - start)
                if run.status != "done":
                    raise SystemExit(f"polaris job failed: {run.hash.get('reason')}")
                found = int(run.hash["spot_count"])
            out[kind] = round(1000 * statistics.median(times) / megapixels, 1)
    return {"consumer_cpu_ms_per_megapixel": out, "consumer_spots_found": found}


if __name__ == "__main__":
    sys.exit(main())
