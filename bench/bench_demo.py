"""End to end: `redis-consumer demo` (private Redis, dev model server, 1 segmentation + 1 zip worker).

Runs the demo on synthetic 256x256 nuclei images and prints one JSON object with throughput
(images/s over the run), p50/p95 job latency (created_at -> finished_at, so queueing included)
and mean per-stage seconds. One segmentation worker means throughput is one worker's rate;
latency grows with the backlog. `--quick`: 8 images + a zip of 2; default: 60 + a zip of 10.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (< 60 s)")
    args = parser.parse_args()
    images, zipped = (8, 2) if args.quick else (60, 10)
    with tempfile.TemporaryDirectory(prefix="rc-bench-demo-") as tmp:
        out = Path(tmp) / "demo-output"
        proc = subprocess.run(
            [sys.executable, "-m", "redis_consumer.cli.main", "demo", "--images", str(images), "--zip-images",
             str(zipped), "--out", str(out), "--json", "--timeout", "300"],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )
        sys.stderr.write(proc.stderr[-2000:])
        try:
            summary = json.loads(proc.stdout)
        except json.JSONDecodeError:
            summary = {}
    result = {
        "bench": "demo",
        "quick": args.quick,
        "ok": proc.returncode == 0 and bool(summary.get("ok")),
        "images": summary.get("image_jobs"),
        "jobs": summary.get("jobs"),
        "wall_seconds": summary.get("wall_seconds"),
        "images_per_second": summary.get("images_per_second"),
        "latency_p50_seconds": summary.get("latency_p50_seconds"),
        "latency_p95_seconds": summary.get("latency_p95_seconds"),
        "mean_stage_seconds": summary.get("mean_stage_seconds"),
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
