"""Polaris (spot detection) postprocessing CPU per megapixel, beside a same-run baseline.

A synthetic image of Gaussian spots at known sub-pixel positions and the heads a perfect spot
model would return for it; then, timed with time.process_time, the worker's own steps:
  preprocess - min_max_normalize of the image (spot_preprocess, clip=False as the kiosk);
  points     - peak_local_max(threshold 0.95, min_distance 1) + offsets (spot_points);
  csv        - spot-to-cell lookup and the kiosk CSV with one label channel (spots_csv);
  overlay    - the spots-over-image PNG (spots_overlay_png);
and the baseline: one `scipy.ndimage.label` of the thresholded P(spot) plane.
Also reports the recovery (within 1 px) so a fast-but-wrong change shows.

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
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
