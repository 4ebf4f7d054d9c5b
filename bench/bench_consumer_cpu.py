"""Consumer CPU per 1024x1024 image: everything the worker does except the model itself.

One segmentation consumer runs in this process against a private redis-server, a local-folder
bucket and the gRPC dev model server serving `Identity` (the model's own work happens in the
server process, so this process's CPU time is the consumer's: claim, download, TIFF load,
normalise, tensor encode/decode, threshold + label, overlay PNG, label TIFF, zip, upload,
finish). Reports CPU ms per image for the whole process (time.process_time: includes the gRPC client's
threads and the background scratch cleanup) and for the worker's main thread alone, plus each
step's wall and CPU time from the job's results.json. Target: <= 50 ms CPU per image on one core.

Usage: `python bench/bench_consumer_cpu.py [--quick] [--images N]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import tifffile

from redis_consumer.consumers.segmentation import SegmentationConsumer
from tests.consumer_harness import Harness, open_result, settings_for, submit
from tests.helpers.model_server import ModelServer
from tests.helpers.redis_server import RedisServer

TARGET_MS = 50.0


def synthetic_image(size: int, seed: int) -> np.ndarray:
    """Bright disks on a noisy uint16 background: a fluorescence-like nuclear image."""
    rng = np.random.default_rng(seed)
    img = rng.normal(400, 40, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    for cy, cx in rng.integers(20, size - 20, (150, 2)):
        r = rng.integers(6, 14)
        box = (slice(max(cy - r, 0), cy + r), slice(max(cx - r, 0), cx + r))
        img[box][(yy[box] - cy) ** 2 + (xx[box] - cx) ** 2 < r * r] += 3000
    return np.clip(img, 0, 65535).astype(np.uint16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (CI smoke run)")
    parser.add_argument("--images", type=int, default=None, help="images to time (default 30, quick 8)")
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    n = args.images or (8 if args.quick else 30)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    redis_server = RedisServer(appendonly=False).start()
    model_server = ModelServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="rc-bench-cpu-"))
    try:
        rds = redis_server.client()
        settings = settings_for(tmp, TF_PORT=model_server.port, SEGMENTATION_MODEL="Identity:1", JOB_LOG_LINES=50)
        harness = Harness(rds, settings, SegmentationConsumer)
        paths = []
        for i in range(min(n, 4)):
            path = tmp / f"img{i}.tif"
            tifffile.imwrite(path, synthetic_image(args.size, i))
            paths.append(path)
        # warm-up: imports, gRPC channel, metadata cache
        submit(rds, settings, str(paths[0]), name="warm.tif")
        assert harness.run_one() == "done", rds.hgetall(rds.keys("seg:warm*")[0])
        cpu, thread_cpu, wall, stages, cpu_stages, objects = [], [], [], {}, {}, []
        for i in range(n):
            key = submit(rds, settings, str(paths[i % len(paths)]), name=f"img{i}.tif")
            c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
            outcome = harness.run_one()
            cpu.append((time.process_time() - c0) * 1000)
            thread_cpu.append((time.thread_time() - t0) * 1000)
            wall.append((time.perf_counter() - w0) * 1000)
            job = rds.hgetall(key)
            if outcome != "done":
                raise SystemExit(f"job ended {outcome}: {job.get('reason')}")
            summary = json.loads(open_result(settings, job).read("results.json"))
            objects.append(summary["object_count"])
            for name, seconds in summary["timings"].items():
                stages.setdefault(name, []).append(seconds * 1000)
            for name, seconds in summary["cpu_timings"].items():
                cpu_stages.setdefault(name, []).append(seconds * 1000)
        cpu_ms = statistics.median(cpu)
        result = {
            "benchmark": "consumer_cpu",
            "quick": args.quick,
            "image": f"{args.size}x{args.size} uint16, 1 channel",
            "model": "Identity:1 (dev server, gRPC)",
            "images": n,
            "cpu_ms_per_image_median": round(cpu_ms, 2),
            "cpu_ms_per_image_mean": round(statistics.mean(cpu), 2),
            "main_thread_cpu_ms_per_image_median": round(statistics.median(thread_cpu), 2),
            "wall_ms_per_image_median": round(statistics.median(wall), 2),
            "stage_wall_ms_median": {k: round(statistics.median(v), 2) for k, v in stages.items()},
            "stage_cpu_ms_median": {k: round(statistics.median(v), 2) for k, v in cpu_stages.items()},
            "cpu_ms_outside_steps_median": round(cpu_ms - sum(statistics.median(v) for v in cpu_stages.values()), 2),
            "objects_per_image_median": statistics.median(objects),
            "target_cpu_ms": TARGET_MS,
            "meets_target": cpu_ms <= TARGET_MS,
        }
        print(json.dumps(result))
        return 0
    finally:
        model_server.stop()
        redis_server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
