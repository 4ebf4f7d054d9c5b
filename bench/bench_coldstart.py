"""Cold start of a worker process: import time and resident memory before its first job.

Each sample is a fresh interpreter that imports the worker entrypoint, loads the consumer class
(`segmentation`), and makes the clients a first job needs (storage for STORAGE_BUCKET, the TF
Serving client with its channel); it reports seconds spent and VmRSS. Repeated for file://, s3://
and gs:// buckets (only the named backend should be imported). Prints one JSON object; target:
<= 0.3 s and <= 80 MB for the worker as deployed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import consume_redis_events  # noqa
from redis_consumer.settings import Settings
from redis_consumer.consumers import registry
settings = Settings.from_env()
try:
    cls = registry.load(settings.CONSUMER_TYPE) if settings.CONSUMER_TYPE != "-" else None
    if cls is None:
        import redis_consumer.worker  # noqa
except Exception as exc:  # consumer not available in this checkout: fall back to the modules it uses
    cls = None
    import redis_consumer.worker  # noqa
t_import = time.perf_counter() - t0
from redis_consumer import storage
storage.get_client(settings.STORAGE_BUCKET, settings)
from redis_consumer.tfserving.client import get_client
get_client(settings).channel()
t_ready = time.perf_counter() - t0
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1]) / 1024
mods = sys.modules
print(json.dumps({"import_s": t_import, "ready_s": t_ready, "rss_mb": rss, "consumer": getattr(cls, "__name__", None),
                  "tensorflow": "tensorflow" in mods, "boto3": "boto3" in mods,
                  "google_cloud_storage": "google.cloud.storage" in mods, "modules": len(mods)}))
"""

BASELINE = r"""
import json
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1]) / 1024
print(json.dumps({"rss_mb": rss}))
"""


def sample(code: str, env: dict) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    wall = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["process_wall_s"] = wall
    return data


def summarize(samples: list[dict]) -> dict:
    out = {}
    for key in ("import_s", "ready_s", "rss_mb", "process_wall_s"):
        if key in samples[0]:
            out[key] = statistics.median(s[key] for s in samples)
    for key in ("consumer", "tensorflow", "boto3", "google_cloud_storage", "modules"):
        if key in samples[0]:
            out[key] = samples[-1][key]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeat = 3 if args.quick else 7
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_", "AWS_", "GOOGLE_"))}
    base_env.update({"CONSUMER_TYPE": "segmentation", "QUEUE": "segmentation", "METRICS_PORT": "0",
                     "PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    buckets = {"file": "file:///tmp/rc-bench-coldstart", "s3": "s3://bench-bucket", "gs": "gs://bench-bucket"}
    result: dict = {"bench": "coldstart", "python": sys.version.split()[0], "repeat": repeat}
    result["baseline_python"] = summarize([sample(BASELINE, base_env) for _ in range(repeat)])
    for name, url in buckets.items():
        env = dict(base_env, STORAGE_BUCKET=url)
        if name == "gs":
            env["STORAGE_EMULATOR_HOST"] = "http://127.0.0.1:9"  # never contacted: no credentials lookup
        try:
            result[name] = summarize([sample(PROBE, env) for _ in range(repeat)])
        except RuntimeError as exc:
            result[name] = {"error": str(exc).strip().splitlines()[-1]}
    # the same without any consumer module: worker loop + storage + TF Serving client only
    result["without_consumer"] = summarize([sample(PROBE, dict(base_env, CONSUMER_TYPE="-",
                                                               STORAGE_BUCKET=buckets["file"]))
                                            for _ in range(repeat)])
    default = result["file"]
    result["import_s"] = default.get("import_s")
    result["ready_s"] = default.get("ready_s")
    result["rss_mb"] = default.get("rss_mb")
    result["target_import_s"] = 0.3
    result["target_rss_mb"] = 80
    result["pass"] = bool(default.get("ready_s") is not None and default["ready_s"] <= 0.3
                          and default["rss_mb"] <= 80 and not default["tensorflow"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
