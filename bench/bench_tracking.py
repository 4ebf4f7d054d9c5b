"""Tracking CPU per frame (the TF-free CellTracker), beside same-run baselines.

A synthetic movie of drifting nuclei (one division, one cell leaving the field) is tracked with
the numpy reference models. Reported per frame, CPU time (time.process_time) of:
  features   - clean_up_annotations + regionprops features, appearance crops, adjacency;
  models     - the reference neighbourhood encoder + inference calls (stand-ins for TF Serving);
  assignment - everything else in track_cells: track histories, cost matrix,
               linear_sum_assignment, births, divisions, the tracked frame;
and the baselines: one `scipy.ndimage.label` of the frame's foreground, and one
`scipy.optimize.linear_sum_assignment` of a random matrix the size of that frame's cost matrix.

`consumer_cpu_ms_per_frame` (unless --no-consumer): the whole `caliban` consumer path on the
same movie as a TIFF, one job through `redis_consumer.testing.run_job` against the dev model
server over gRPC in its own process (this process's CPU is the worker's: load, per-frame nuclear
segmentation pre/post-processing, features, gRPC, assignment, TIFF/.trk/lineage/PNG, zip), and
`trk_input` for a .trk with labels (tracking only, no segmentation).

Usage: `python bench/bench_tracking.py [--quick] [--frames N] [--grid G] [--repeats R]`; prints one JSON object.
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
from scipy.optimize import linear_sum_assignment

from redis_consumer.deepcell.tracking import reference_models as rm
from redis_consumer.deepcell.tracking import tracker
from redis_consumer.deepcell.tracking.tracker import (
    KIOSK_TRACKING_DEFAULTS,
    track_cells,
)
from tests.helpers.synthetic_cells import nuclei_movie

# the kiosk's parameters; the bare reference encoder returns the embedding itself (axis 0)
PARAMS = dict(KIOSK_TRACKING_DEFAULTS, embedding_axis=0)


def run_once(movie, sizes: list[tuple[int, int]]) -> dict[str, float]:
    model_cpu = [0.0]

    def timed(fn):
        def wrapper(*args):
            start = time.process_time()
            try:
                return fn(*args)
            finally:
                model_cpu[0] += time.process_time() - start

        return wrapper

    def infer(*args):
        sizes.append((args[0].shape[2], args[2].shape[2]))
        return rm.inference(*args)

    # the features are timed inside the same track_cells call (its own clean-up and movie_features),
    # so `assignment` = total - features - models is one run's parts, never a difference of two runs
    feature_cpu = [0.0]

    def timed_features(fn):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                feature_cpu[0] += time.process_time() - start

        return wrapper

    saved = tracker.clean_up_annotations, tracker.movie_features
    tracker.clean_up_annotations, tracker.movie_features = (timed_features(f) for f in saved)
    try:
        start = time.process_time()
        track_cells(movie.X, movie.y, timed(rm.neighborhood_encoder), timed(infer), **PARAMS)
        total = time.process_time() - start
    finally:
        tracker.clean_up_annotations, tracker.movie_features = saved
    features = feature_cpu[0]
    return {"features": features, "models": model_cpu[0], "assignment": total - features - model_cpu[0], "total": total}


def baselines(movie, sizes: list[tuple[int, int]], rng: np.random.Generator) -> dict[str, float]:
    start = time.process_time()
    for frame in movie.y:
        ndimage.label(frame > 0)
    label = time.process_time() - start
    matrices = [rng.random((n + m, n + m)).astype(np.float32) for n, m in sizes]
    start = time.process_time()
    for cost in matrices:
        linear_sum_assignment(cost)
    lsa = time.process_time() - start
    return {"ndimage_label": label, "linear_sum_assignment": lsa}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter movie, fewer repeats")
    parser.add_argument("--frames", type=int, default=None, help="frames (default 60, quick 20)")
    parser.add_argument("--grid", type=int, default=5, help="grid x grid nuclei (default 5 -> 25 cells)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None, help="runs to take the median of (default 5, quick 2)")
    parser.add_argument("--no-consumer", dest="consumer", action="store_false",
                        help="skip the whole-consumer measurement (no dev model server)")
    args = parser.parse_args()
    frames = args.frames or (20 if args.quick else 60)
    repeats = args.repeats or (2 if args.quick else 5)
    movie = nuclei_movie(
        n_frames=frames,
        size=args.size,
        grid=args.grid,
        divide=[(args.grid * args.grid // 2, frames // 2)],
        leave=args.grid - 1,
        leave_frame=frames // 3,
        seed=1,
        split=1.2,  # daughters a segmentation model can tell apart (the consumer segments the frames)
    )
    rng = np.random.default_rng(0)
    runs, base = [], []
    sizes: list[tuple[int, int]] = []
    for _ in range(repeats):
        sizes.clear()
        runs.append(run_once(movie, sizes))
        base.append(baselines(movie, sizes, rng))

    def per_frame_ms(rows, key):
        return round(1000 * statistics.median(r[key] for r in rows) / frames, 3)

    result = {
        "benchmark": "tracking_cpu",
        "quick": args.quick,
        "movie": f"{frames} frames {args.size}x{args.size}, {args.grid * args.grid} nuclei, 1 division, 1 leaving",
        "cells_per_frame_max": max(len(t) for t in movie.truth),
        "cost_matrix_side_median": statistics.median(n + m for n, m in sizes),
        "repeats": repeats,
        "params": PARAMS,
        "cpu_ms_per_frame": {key: per_frame_ms(runs, key) for key in ("features", "models", "assignment", "total")},
        "baseline_cpu_ms_per_frame": {key: per_frame_ms(base, key) for key in ("ndimage_label", "linear_sum_assignment")},
    }
    result["features_over_ndimage_label"] = round(
        result["cpu_ms_per_frame"]["features"] / max(result["baseline_cpu_ms_per_frame"]["ndimage_label"], 1e-9), 1
    )
    result["assignment_over_linear_sum_assignment"] = round(
        result["cpu_ms_per_frame"]["assignment"]
        / max(result["baseline_cpu_ms_per_frame"]["linear_sum_assignment"], 1e-9),
        1,
    )
    if args.consumer:
        result["consumer_cpu_ms_per_frame"] = consumer_cpu(movie, max(1, repeats // 2))
    print(json.dumps(result))
    return 0


def consumer_cpu(movie, repeats: int) -> dict[str, float]:
    """CPU ms per frame of whole caliban jobs (this process only; the model server is another)."""
    import io

    import tifffile

    from redis_consumer.consumers.caliban import CalibanConsumer
    from redis_consumer.deepcell.tracking import trk
    from redis_consumer.testing import ModelServer, run_job

    buf = io.BytesIO()
    tifffile.imwrite(buf, movie.X)
    inputs = {"tiff_input": {"movie.tif": buf.getvalue()},
              "trk_input": {"movie.trk": trk.save_trk({}, movie.X[..., None], movie.y[..., None].astype(np.int32))}}
    out = {}
    with ModelServer() as server:
        for kind, files in inputs.items():
            times = []
            for _ in range(repeats):
                start = time.process_time()
                run = run_job(CalibanConsumer, {}, inputs=files, model_server=server.address)
                times.append(time.process_time() - start)
                if run.status != "done":
                    raise SystemExit(f"caliban job failed: {run.hash.get('reason')}")
            out[kind] = round(1000 * statistics.median(times) / len(movie.X), 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
