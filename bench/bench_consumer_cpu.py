"""Consumer CPU per 1024x1024 image: everything the worker does except the model itself.

One segmentation consumer runs in this process against a private redis-server, a local-folder
bucket and the gRPC dev model server serving `Identity` (the model's own work happens in the
server process, so this process's CPU time is the consumer's: claim, download, TIFF load,
normalise, tensor encode/decode, threshold + label, overlay PNG, label TIFF, zip, upload,
finish). Reports CPU ms per image for the whole process (time.process_time: includes the gRPC client's
threads and the background scratch cleanup) and for the worker's main thread alone, plus each
step's wall and CPU time from the job's results.json. Target: <= 50 ms CPU per image on one core.

The threshold path above runs on jobs naming `Identity:1` (a single-head, any-size model takes
`segmentation`'s threshold fallback). `--deepcell` (on by default; `--no-deepcell` skips it) then
runs the kiosk job types on the DeepCell path against the dev server with `--simulate-gpu`
(256x256 tiles): `segmentation` (NuclearSegmentation:6, channels `0,`) and `mesmer`
(MultiplexSegmentation:9, compartment `both`), reporting CPU ms per megapixel per stage (pre,
predict_client = the gRPC byte movement, untile, deep watershed, TIFF, PNG, zip, redis,
download, decode, count, upload, other) beside the same-run floor of moving that stage's bytes
once (a memcpy of the same bytes, an ISA-L deflate of them, or one `ndimage.label`; see
bench/consumer_stages.py), the CPU per MP outside the deep watershed against the 25 ms target
(and outside it and gRPC), and images/s of one worker (sequential jobs, wall clock).

The process re-executes itself under the glibc malloc settings the image and the chart ship
(`--malloc shipped`, bench_gpu.SHIPPED; `--malloc default` for glibc's own), recorded as `malloc`.

Usage: `python bench/bench_consumer_cpu.py [--quick] [--images N] [--no-deepcell | --deepcell-only]
[--deepcell-images N] [--kinds segmentation,mesmer] [--malloc shipped|default|VARIANT]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import consumer_stages
import numpy as np
import tifffile

from redis_consumer.consumers.mesmer import MesmerConsumer
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


def _run_under_malloc(name: str) -> str:
    """Re-exec this process with the malloc variant's environment (glibc reads it at start only).

    The image and the chart ship glibc malloc settings (bench_gpu.SHIPPED); a worker's CPU measured
    without them would not be what a deployed worker spends."""
    from bench_gpu import MALLOC, SHIPPED

    variant = SHIPPED if name == "shipped" else name
    if variant not in MALLOC:
        raise SystemExit(f"--malloc must be 'shipped' or one of {', '.join(MALLOC)}")
    wanted = MALLOC[variant]
    names = {key for settings in MALLOC.values() for key in settings}
    if any(os.environ.get(key) != wanted.get(key) for key in names):
        env = {k: v for k, v in os.environ.items() if k not in names} | wanted
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    return variant


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (CI smoke run)")
    parser.add_argument("--images", type=int, default=None, help="images to time (default 30, quick 8)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--no-deepcell", dest="deepcell", action="store_false",
                        help="skip the segmentation/mesmer DeepCell-path figures")
    parser.add_argument("--deepcell-only", action="store_true", help="only the DeepCell-path figures")
    parser.add_argument("--deepcell-images", type=int, default=None, help="DeepCell jobs per kind (default 8, quick 3)")
    parser.add_argument("--kinds", default="segmentation,mesmer", help="DeepCell job kinds to run")
    parser.add_argument("--malloc", default="shipped",
                        help="glibc malloc variant of bench_gpu.MALLOC the worker runs under (default: the one the "
                             "image and the chart ship; 'default' = glibc's own)")
    args = parser.parse_args()
    malloc = _run_under_malloc(args.malloc)
    n = args.images or (8 if args.quick else 30)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    redis_server = RedisServer(appendonly=False).start()
    model_server = ModelServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="rc-bench-cpu-"))
    try:
        rds = redis_server.client()
        if args.deepcell_only:
            result = {"benchmark": "consumer_cpu", "quick": args.quick, "malloc": malloc,
                      "deepcell": deepcell_figures(rds, tmp, args.size, args.deepcell_images or (3 if args.quick else 8),
                                                   tuple(args.kinds.split(",")))}
            print(json.dumps(result))
            return 0
        settings = settings_for(tmp, TF_PORT=model_server.port, SEGMENTATION_MODEL="Identity:1", JOB_LOG_LINES=50)
        harness = Harness(rds, settings, SegmentationConsumer)
        paths = []
        for i in range(min(n, 4)):
            path = tmp / f"img{i}.tif"
            tifffile.imwrite(path, synthetic_image(args.size, i))
            paths.append(path)
        # warm-up: imports, gRPC channel, metadata cache
        submit(rds, settings, str(paths[0]), name="warm.tif", model_name="Identity", model_version="1")
        assert harness.run_one() == "done", rds.hgetall(rds.keys("seg:warm*")[0])
        cpu, thread_cpu, wall, stages, cpu_stages, objects = [], [], [], {}, {}, []
        for i in range(n):
            key = submit(rds, settings, str(paths[i % len(paths)]), name=f"img{i}.tif", model_name="Identity",
                         model_version="1")
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
            "benchmark": "consumer_cpu", "malloc": malloc,
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
        if args.deepcell:
            result["deepcell"] = deepcell_figures(rds, tmp, args.size, args.deepcell_images or (3 if args.quick else 8),
                                                  tuple(args.kinds.split(",")))
        print(json.dumps(result))
        return 0
    finally:
        model_server.stop()
        redis_server.cleanup()


def floors(size: int, labels: np.ndarray | None = None, repeat: int = 15) -> dict[str, float]:
    """CPU ms per megapixel of the cheapest way to touch the image once, in this run.

    memcpy_image: one copy of the (size, size) float32 image into a warm buffer; isal_deflate_labels:
    one ISA-L level-1 raw deflate of int32 labels of that size; ndimage_label: one
    `scipy.ndimage.label` of the objects' mask. Medians of `repeat` runs.
    """
    from isal import isal_zlib
    from scipy import ndimage

    image = synthetic_image(size, 0).astype(np.float32)
    if labels is None:
        labels = ndimage.label(image > 2000)[0].astype(np.int32)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    mask = labels > 0
    dst = np.empty_like(image)
    jobs = {"memcpy_image": lambda: np.copyto(dst, image),
            "isal_deflate_labels": lambda: isal_zlib.compress(labels, 1, -15),
            "ndimage_label": lambda: ndimage.label(mask)}
    mp = size * size / 1e6
    return {name: round(consumer_stages.median_cpu(job, repeat) * 1000 / mp, 3) for name, job in jobs.items()}


def two_channel_image(size: int, seed: int) -> np.ndarray:
    """[nuclear, membrane] (H, W, 2): the nuclei above and a bright ring around each."""
    from scipy import ndimage

    nuclear = synthetic_image(size, seed)
    dist = ndimage.distance_transform_edt(nuclear < 2000)
    membrane = np.random.default_rng(seed).normal(300, 30, nuclear.shape) + 2500 * ((dist > 3) & (dist <= 6))
    return np.stack([nuclear, np.clip(membrane, 0, 65535).astype(np.uint16)], axis=-1)


def deepcell_figures(rds, tmp: Path, size: int, n: int, kinds: tuple[str, ...] = ("segmentation", "mesmer")) -> dict:
    """segmentation and mesmer on the DeepCell path, dev server with --simulate-gpu (256 tiles),
    per stage beside the same-run floor of each (bench/consumer_stages.py)."""
    server = ModelServer(simulate_gpu=True).start()
    out = {"server": "serve-model --simulate-gpu (SimulatedGPU 4 ms + 0.5 ms/tile per batch, 256x256 tiles)",
           "image": f"{size}x{size} uint16", "images": n}
    out["floors_cpu_ms_per_mp"] = floors(size)
    jobs = {"segmentation": (SegmentationConsumer, synthetic_image, {"channels": "0,", "dimension_order": "XY"}),
            "mesmer": (MesmerConsumer, two_channel_image, {"channels": "0,1", "compartment": "both"})}
    try:
        for kind in kinds:
            cls, make, fields = jobs[kind]
            settings = settings_for(tmp / kind, TF_PORT=server.port, JOB_LOG_LINES=50, QUEUE=f"bench-{kind}",
                                    MAX_IMAGE_HEIGHT=4096, MAX_IMAGE_WIDTH=4096)
            harness = Harness(rds, settings, cls)
            path = tmp / f"{kind}.tif"
            image = make(size, 1)
            tifffile.imwrite(path, image)
            out[kind] = consumer_stages.run_kind(kind, rds, harness, settings, path,
                                                 image if image.ndim == 3 else image[..., None], fields, n, size)
        out["server_stats"] = server.stats()
        out["note"] = ("images/s is bounded by the dev server computing its synthetic heads in numpy on the same "
                       "cores, not by the SimulatedGPU hold; CPU per MP is this worker process only; "
                       "predict_client is the gRPC byte movement (redis_consumer/tfserving/)")
    finally:
        server.stop()
    return out


if __name__ == "__main__":
    sys.exit(main())
