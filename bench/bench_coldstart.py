"""Cold start: time to first result (process start -> first job `done`) and idle RSS of a worker.

Each sample starts a fresh worker process (`consume_redis_events.py`, CONSUMER_TYPE=segmentation)
with one segmentation job already waiting (a 256x256 uint8 TIFF in the bucket, the dev model
server over real gRPC, a private redis-server). "First result" is the job's `finished_at` (written
by the worker's final Lua step) minus the wall-clock time just before the process was spawned: it
covers interpreter start, imports, settings, the Redis connection, the warm-up, the claim, the
download, the gRPC predict, post-processing, the zip upload and the final write. Idle RSS is the
worker's RSS (`smaps_rollup`) one second after that job, with the queue empty, reported with its
anonymous part (`idle_anon_mb`, the worker's own memory) and the rest (`idle_file_mb`, mapped
file pages: the shared libraries' code). Repeated for a file://, an s3://
(moto server) and a gs:// (GCS emulator) bucket; medians reported beside the same-run baseline of
a bare `python -c pass` (its wall time and RSS). Before the samples the package is byte-compiled
(`compileall`, as the image's build stage does: Dockerfile), so no sample pays for compiling
`redis_consumer`'s sources (~0.07 s here), which a shipped worker never does; the dependencies'
bytecode is the installer's, as in the image. Targets: <= 0.4 s (file://), <= 0.6 s (s3://,
gs://), idle RSS <= 80 MB. Prints one JSON object.

The job names the dev server's demo model (`NuclearSegmentation:1`, the threshold path). Beside
it, `file_deepcell` is the same measure for a job naming no model, as the kiosk sends them: the
worker's NUCLEAR_MODEL (`NuclearSegmentation:6`, fixed tiles) through the DeepCell application
and the deep watershed (that job also imports scikit-image). `file_deepcell_shipped_malloc` is
that job with the worker under the glibc malloc settings the image and the chart ship
(bench_gpu.SHIPPED: freed heap is kept for the next job), whose idle RSS has the <= 80 MB target;
`file_deepcell_shipped_malloc_no_trim` is its same-run baseline with IDLE_MALLOC_TRIM=false (the
worker keeps the heap a job freed when its queue runs dry).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis_consumer.utils.timestamps import parse_iso
from tests.helpers.chaos_procs import submit, worker_env
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer

TARGETS = {"file": 0.4, "s3": 0.6, "gs": 0.6}
TARGET_RSS_MB = 80
INPUT = "uploads/cells.tif"


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, its anonymous part) in MB. The rest of RSS is file pages: the shared libraries'
    code, which every worker on a node shares and which a kernel that maps page-cache files in
    large folios (ext4 on Linux >= 6.16) counts nearly whole (grpc's 17 MB cygrpc: ~14 MB)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Anonymous"):
                fields[name] = int(rest.split()[0]) / 1024
    return fields.get("Rss", 0.0), fields.get("Anonymous", 0.0)


def _image_bytes() -> bytes:
    import io

    import numpy as np
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.random.default_rng(0).random((256, 256)) * 255).astype("uint8"))
    return buf.getvalue()


#: Per figure: (bucket kind, the job's model_name, model_version, worker environment on top of the
#: base: "shipped" = bench_gpu.SHIPPED's malloc settings); '' = the worker's NUCLEAR_MODEL.
FIGURES = {"file": ("file", "NuclearSegmentation", "1", {}), "s3": ("s3", "NuclearSegmentation", "1", {}),
           "gs": ("gs", "NuclearSegmentation", "1", {}), "file_deepcell": ("file", "", "", {}),
           "file_deepcell_shipped_malloc": ("file", "", "", {"malloc": "shipped"}),
           "file_deepcell_shipped_malloc_no_trim": ("file", "", "", {"malloc": "shipped", "IDLE_MALLOC_TRIM": "false"})}
#: Figures whose idle RSS alone has a target (TARGET_RSS_MB).
RSS_TARGETED = ("file_deepcell_shipped_malloc",)


def _worker_env(env: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """`env` plus a figure's own variables; "malloc" names a bench_gpu.MALLOC variant."""
    from bench_gpu import MALLOC, SHIPPED

    extra = dict(extra)
    variant = extra.pop("malloc", None)
    names = {key for settings in MALLOC.values() for key in settings}
    if variant is not None:
        env = {k: v for k, v in env.items() if k not in names} | MALLOC[SHIPPED if variant == "shipped" else variant]
    return env | extra


def one_sample(r, env: dict[str, str], queue: str, model: tuple[str, str] = ("NuclearSegmentation", "1")) -> dict:
    """Start a worker with one job waiting; seconds to its `done` and its idle RSS."""
    key = submit(r, queue, f"{queue}:cells.tif:{uuid.uuid4().hex}", input_file_name=INPUT, original_name="cells.tif",
                 model_name=model[0], model_version=model[1])
    with tempfile.TemporaryFile() as log:
        started = time.time()
        proc = subprocess.Popen([sys.executable, str(ROOT / "consume_redis_events.py")], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_until(lambda: r.hget(key, "status") in ("done", "failed"), 60, interval=0.005, message="first job")
            except AssertionError:
                pass
            status, finished = r.hget(key, "status"), r.hget(key, "finished_at")
            time.sleep(1.0)
            rss, anon = _memory_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
            log.seek(0)
            tail = log.read()[-1500:].decode("utf-8", "replace")
    if status != "done":
        raise RuntimeError(f"first job {status}: {r.hget(key, 'reason')} {tail}")
    return {"first_result_s": parse_iso(finished).timestamp() - started, "idle_rss_mb": rss, "idle_anon_mb": anon}


def precompile(root: Path) -> None:
    """Byte-compile the package, as the image does: with PYTHONDONTWRITEBYTECODE set (the image
    and many dev shells set it) a source checkout would otherwise recompile on every start."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "redis_consumer")], check=True,
                   stdout=subprocess.DEVNULL)


def python_baseline(repeat: int) -> dict:
    code = "import sys\nfor l in open('/proc/self/status'):\n    l.startswith('VmRSS:') and print(l.split()[1])"
    walls, rss = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
        rss.append(int(out.stdout.split()[0]) / 1024)
    return {"wall_s": round(statistics.median(walls), 4), "rss_mb": round(statistics.median(rss), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=list(FIGURES), choices=list(FIGURES))
    args = ap.parse_args()
    repeat = 3 if args.quick else 5
    from bench_gpu import SHIPPED

    from tests.helpers.model_server import ModelServer

    result: dict = {"bench": "coldstart", "python": sys.version.split()[0], "repeat": repeat,
                    "consumer": "segmentation", "image": "256x256 uint8", "shipped_malloc": SHIPPED, "targets_s": TARGETS,
                    "target_idle_rss_mb": TARGET_RSS_MB, "baseline_python": python_baseline(repeat)}
    precompile(ROOT)
    data = _image_bytes()
    workdir = Path(tempfile.mkdtemp(prefix="rc-coldstart-"))
    server = RedisServer(appendonly=False).start()
    model = ModelServer().start()
    r = server.client()
    try:
        base = worker_env(REDIS_URL=server.url, LOG_LEVEL="WARNING", TF_HOST="127.0.0.1", TF_PORT=str(model.port),
                          OUTPUT_URL_MODE="key", EMPTY_QUEUE_TIMEOUT="5", HEARTBEAT_INTERVAL="5",
                          HEARTBEAT_TTL="30")
        for kind in args.only:
            bucket, model_name, model_version, extra = FIGURES[kind]
            try:
                env, cleanup = _bucket(bucket, _worker_env(base, extra), workdir, data)
            except Exception as exc:  # noqa: BLE001 - a missing emulator must not hide the other figures
                result[kind] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            try:
                env["QUEUE"] = queue = f"cold-{kind}".replace("_", "-")
                samples = [one_sample(r, env, queue, (model_name, model_version)) for _ in range(repeat)]
            finally:
                cleanup()
            first = statistics.median(s["first_result_s"] for s in samples)
            rss = statistics.median(s["idle_rss_mb"] for s in samples)
            result[kind] = {"first_result_s": round(first, 4), "first_result_min_s": round(min(
                s["first_result_s"] for s in samples), 4), "idle_rss_mb": round(rss, 1)}
            anon = statistics.median(s["idle_anon_mb"] for s in samples)
            result[kind].update(idle_anon_mb=round(anon, 1), idle_file_mb=round(rss - anon, 1))
            if kind in TARGETS:
                result[kind]["pass"] = first <= TARGETS[kind] and rss <= TARGET_RSS_MB
            elif kind in RSS_TARGETED:
                result[kind]["pass"] = rss <= TARGET_RSS_MB
    finally:
        model.stop()
        server.cleanup()
    result["first_result_s"] = result.get("file", {}).get("first_result_s")
    result["idle_rss_mb"] = result.get("file", {}).get("idle_rss_mb")
    result["pass"] = all(result[k].get("pass") for k in args.only if k in result and k in (*TARGETS, *RSS_TARGETED))
    print(json.dumps(result))
    return 0


def _bucket(kind: str, base: dict[str, str], workdir: Path, data: bytes):
    """Environment for a bucket of this kind holding the input image, and its cleanup."""
    if kind == "file":
        folder = workdir / "bucket"
        (folder / "uploads").mkdir(parents=True, exist_ok=True)
        (folder / INPUT).write_bytes(data)
        return {**base, "STORAGE_BUCKET": f"file://{folder}"}, lambda: None
    if kind == "s3":
        import boto3

        from tests.helpers.s3_server import S3Server

        s3 = S3Server(buckets=("bench-bucket",)).start()
        boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                     region_name="us-east-1").put_object(Bucket="bench-bucket", Key=INPUT, Body=data)
        return {**base, **s3.env(), "STORAGE_BUCKET": "s3://bench-bucket"}, s3.cleanup
    from tests.helpers.gcs_server import GCSServer

    # the emulator is installed beside this interpreter (the dev venv)
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

    gcs = GCSServer(bucket="bench-bucket").start()
    import urllib.parse
    import urllib.request

    url = f"{gcs.host}/upload/storage/v1/b/bench-bucket/o?uploadType=media&name={urllib.parse.quote(INPUT, safe='')}"
    urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=10).read()
    return {**base, **gcs.env(), "STORAGE_BUCKET": "gs://bench-bucket"}, gcs.cleanup


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
