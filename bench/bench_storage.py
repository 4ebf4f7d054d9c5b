"""Storage benchmark: a large file up and down through a moto S3 server, memory and throughput.

Proves transfers stream: the resident memory of this process may grow by less than 64 MB while a
512 MB file (64 MB with --quick) goes up and down through `redis_consumer.storage`. Throughput is
reported beside a plain HTTP PUT/GET of the same bytes to the same server in the same run, so the
ratio (not the absolute speed of a shared machine) is what to compare.

    .venv/bin/python bench/bench_storage.py [--quick]   # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis_consumer import storage
from redis_consumer.settings import Settings
from tests.helpers.gcs_server import GCSServer
from tests.helpers.s3_server import S3Server

log = logging.getLogger("bench_storage")
MB = 1024 * 1024
RSS_LIMIT_MB = 64
GCS_MB = 64  # the emulator rewrites the whole object per resumable chunk: quadratic, so kept small


class PeakRss:
    """Samples this process's RSS every few milliseconds while a transfer runs."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / MB


def make_file(path: Path, size: int) -> None:
    block = bytearray(os.urandom(MB))
    with open(path, "wb") as f:
        for i in range(size // MB):
            block[0] = i % 256
            f.write(block)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def http_put(port: int, path: str, src: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, blocksize=MB)
    with open(src, "rb") as body:
        conn.request("PUT", path, body=body, headers={"Content-Length": str(src.stat().st_size), "x-amz-acl": "public-read"})
        resp = conn.getresponse()
        resp.read()
    conn.close()
    if resp.status >= 300:
        raise RuntimeError(f"plain PUT failed: HTTP {resp.status}")


def http_get(port: int, path: str, dest: Path) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path)
    resp = conn.getresponse()
    if resp.status >= 300:
        raise RuntimeError(f"plain GET failed: HTTP {resp.status}")
    with open(dest, "wb") as out:
        while chunk := resp.read(MB):
            out.write(chunk)
    conn.close()


@contextmanager
def scratch(prefix: str):
    """A temporary directory, removed with everything in it afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        work.rmdir()


def round_trip(client, work: Path, src: Path, size_mb: int, through: str) -> tuple[dict, float, float, float]:
    """Upload `src` as big.bin and download it again through `client`, after a warm-up outside the
    measurement: (summary, upload seconds, download seconds, unrounded peak RSS growth in MB)."""
    tiny = work / "tiny.bin"
    tiny.write_bytes(b"warm-up")
    client.upload(str(tiny), "tiny.bin")  # imports, connection pool, credentials: outside the measurement
    client.download("tiny.bin", str(work / "warm"))
    log.info("upload/download %d MB through %s", size_mb, through)
    with PeakRss() as up_rss:
        up_s = timed(lambda: client.upload(str(src), "big.bin"))
    with PeakRss() as down_rss:
        down_s = timed(lambda: client.download("big.bin", str(work / "dl")))
    same = (work / "dl" / "big.bin").stat().st_size == size_mb * MB
    summary = {"size_mb": size_mb, "upload_mb_s": round(size_mb / up_s, 1),
               "download_mb_s": round(size_mb / down_s, 1), "rss_growth_upload_mb": round(up_rss.growth_mb, 1),
               "rss_growth_download_mb": round(down_rss.growth_mb, 1), "bytes_match": same}
    return summary, up_s, down_s, max(up_rss.growth_mb, down_rss.growth_mb)


def gcs_round_trip(size_mb: int) -> dict:
    """The same measurement through the GCS emulator (resumable 8 MB chunks up, streamed down)."""
    with scratch("rc-bench-gcs-") as work:
        server = GCSServer(bucket="bench").start()
        try:
            src = work / "input.bin"
            make_file(src, size_mb * MB)
            settings = Settings.from_env({}, **server.env(), OUTPUT_URL_MODE="key", MAX_INPUT_BYTES=size_mb * MB)
            summary, *_ = round_trip(storage.get_client("gs://bench/run", settings), work, src, size_mb,
                                       "the GCS emulator")
        finally:
            server.cleanup()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MB instead of 512 MB")
    parser.add_argument("--size-mb", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    size_mb = args.size_mb or (64 if args.quick else 512)
    size = size_mb * MB

    with scratch("rc-bench-storage-") as work:
        server = S3Server(buckets=("bench",)).start()
        try:
            src = work / "input.bin"
            make_file(src, size)
            settings = Settings.from_env({}, **server.env(), OUTPUT_URL_MODE="key", MAX_INPUT_BYTES=size + 1)
            client = storage.get_client("s3://bench/run", settings)
            s3, up_s, down_s, s3_rss_growth = round_trip(client, work, src, size_mb, "storage (S3)")
            (work / "dl" / "big.bin").unlink()
            client.delete("big.bin")

            log.info("plain HTTP PUT/GET of the same bytes")
            put_s = timed(lambda: http_put(server.port, "/bench/plain.bin", src))
            get_s = timed(lambda: http_get(server.port, "/bench/plain.bin", work / "plain.bin"))
        finally:
            server.cleanup()

    gcs = gcs_round_trip(GCS_MB)
    rss_growth = max(s3_rss_growth, gcs["rss_growth_upload_mb"], gcs["rss_growth_download_mb"])
    result = {
        "bench": "storage",
        "backend": "s3 (moto server)",
        "size_mb": size_mb,
        "storage_upload_mb_s": s3["upload_mb_s"],
        "storage_download_mb_s": s3["download_mb_s"],
        "plain_http_put_mb_s": round(size_mb / put_s, 1),
        "plain_http_get_mb_s": round(size_mb / get_s, 1),
        "upload_vs_plain_put": round(put_s / up_s, 2),
        "download_vs_plain_get": round(get_s / down_s, 2),
        "rss_growth_upload_mb": s3["rss_growth_upload_mb"],
        "rss_growth_download_mb": s3["rss_growth_download_mb"],
        "rss_limit_mb": RSS_LIMIT_MB,
        "bytes_match": s3["bytes_match"],
        "gcs_emulator": gcs,
        "ok": bool(s3["bytes_match"] and gcs["bytes_match"] and rss_growth < RSS_LIMIT_MB),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
