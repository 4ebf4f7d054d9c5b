"""Zip fan-out / fan-in at scale: Redis commands per child and the parent's lag after its last child.

A zip of N small TIFFs goes to `{QUEUE}-zip`; real worker processes (`consume_redis_events.py`)
serve it: one zip worker and two segmentation workers, with the dev model server's `Identity`
model and a local-folder bucket. Redis work is counted with `INFO commandstats` deltas over the
whole run; running two archive sizes (N/10 and N) in one go shows the per-child cost is
constant (their ratio ~1), i.e. fan-in is event-driven and nobody polls the children. The
parent must be `done` within 1 s of its last child's `finished_at`.

Usage: `python bench/bench_fanin.py [--quick]` (quick: 100 images); prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import tifffile

from redis_consumer.queue import keys
from redis_consumer.utils.timestamps import now_iso, parse_iso
from tests.helpers.model_server import ModelServer
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer, env_for
from tests.helpers.workers import start_worker, stop_all

log = logging.getLogger("bench_fanin")


def small_tif(seed: int, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 10, (size, size))
    yy, xx = np.mgrid[:size, :size]
    img[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < 64] += 2000
    buf = io.BytesIO()
    tifffile.imwrite(buf, img.astype(np.uint16))
    return buf.getvalue()


def make_zip(path: Path, n: int) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"plate/well_{i:05d}.tif", small_tif(i))


def commandstats(rds) -> dict[str, int]:
    return {name.replace("cmdstat_", ""): int(v["calls"]) for name, v in rds.info("commandstats").items()}


def run_archive(rds, bucket: Path, n: int, timeout: float) -> dict:
    name = f"plate{n}-{uuid.uuid4().hex[:6]}.zip"
    make_zip(bucket / "uploads" / name, n)
    key = f"segmentation-zip:{name}:{uuid.uuid4().hex}"
    before = commandstats(rds)
    stamp = now_iso()
    rds.hset(key, mapping={"status": "new", "input_file_name": f"uploads/{name}", "original_name": name,
                           "created_at": stamp, "updated_at": stamp})
    rds.lpush("segmentation-zip", key)
    t0 = time.perf_counter()
    polls = [0]

    def ended() -> bool:
        polls[0] += 1
        return rds.hget(key, "status") in ("done", "failed")

    wait_until(ended, timeout=timeout, interval=0.1, message=f"zip of {n} to finish")
    elapsed = time.perf_counter() - t0
    after = commandstats(rds)
    after["hget"] = after.get("hget", 0) - polls[0]  # our own polling is not the system's work
    after["info"] = after.get("info", 0) - 1
    parent = rds.hgetall(key)
    if parent["status"] != "done":
        raise SystemExit(f"parent failed: {parent.get('reason')}")
    children = rds.lrange(keys.children(key), 0, -1)
    pipe = rds.pipeline(transaction=False)
    for child in children:
        pipe.hget(child, "finished_at")
    last_child = max(parse_iso(t).timestamp() for t in pipe.execute() if t)
    delta = {cmd: after.get(cmd, 0) - before.get(cmd, 0) for cmd in after}
    delta = {cmd: d for cmd, d in sorted(delta.items()) if d > 0}
    total = sum(delta.values())
    return {
        "images": n,
        "seconds": round(elapsed, 3),
        "children_done": int(parent.get("children_done", 0)),
        "children_failed": int(parent.get("children_failed", 0)),
        "parent_done_after_last_child_s": round(parse_iso(parent["finished_at"]).timestamp() - last_child, 3),
        # where that time goes: the fan-in claim, merging the children's zips, uploading the result
        "parent_fan_in_claimed_after_last_child_s": round(parse_iso(parent["started_at"]).timestamp() - last_child, 3),
        # the parent's own fan-in (merge the children's zips + upload): `cleanup_time`; its
        # postprocess_time/upload_time are the children's, comma-joined as the kiosk writes them
        "parent_fan_in_s": float(parent.get("cleanup_time", 0) or 0),
        "redis_commands": total,
        "redis_commands_per_child": round(total / n, 2),
        "commands_by_type": delta,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 images instead of 1,000")
    parser.add_argument("--images", type=int, default=None)
    args = parser.parse_args()
    n = args.images or (100 if args.quick else 1000)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    redis_server = RedisServer(appendonly=False).start()
    model_server = ModelServer().start()
    tmp = Path(tempfile.mkdtemp(prefix="rc-bench-fanin-"))
    bucket = tmp / "bucket"
    (bucket / "uploads").mkdir(parents=True)
    procs = []
    try:
        rds = redis_server.client()
        env = env_for(redis_server, QUEUE="segmentation", TF_PORT=str(model_server.port),
                      STORAGE_BUCKET=f"file://{bucket}", OUTPUT_URL_MODE="key", SEGMENTATION_MODEL="Identity:1",
                      MAX_ZIP_ENTRIES=str(max(n, 1000)), LOG_LEVEL="WARNING")
        procs.append(start_worker({**env, "CONSUMER_TYPE": "zip"}, str(tmp / "zip.log")))
        for i in range(2):
            procs.append(start_worker({**env, "CONSUMER_TYPE": "segmentation"}, str(tmp / f"seg{i}.log")))
        # warm-up: workers up, model metadata cached
        run_archive(rds, bucket, 4, timeout=60)
        small = run_archive(rds, bucket, max(10, n // 10), timeout=300)
        log.info("small archive: %s", {k: v for k, v in small.items() if k != "commands_by_type"})
        large = run_archive(rds, bucket, n, timeout=1200)
        log.info("large archive: %s", {k: v for k, v in large.items() if k != "commands_by_type"})
        ratio = large["redis_commands_per_child"] / small["redis_commands_per_child"]
        result = {
            "benchmark": "zip_fanin",
            "quick": args.quick,
            "workers": {"zip": 1, "segmentation": 2},
            "small": small,
            "large": large,
            "commands_per_child_ratio_large_vs_small": round(ratio, 3),
            "commands_per_child_constant": 0.8 <= ratio <= 1.2,
            "parent_within_1s_of_last_child": large["parent_done_after_last_child_s"] <= 1.0,
            "children_per_second": round(n / large["seconds"], 1),
        }
        print(json.dumps(result))
        return 0
    finally:
        stop_all(procs)
        model_server.stop()
        redis_server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
