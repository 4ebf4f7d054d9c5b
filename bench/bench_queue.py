"""Queue core benchmark: idle pickup latency and null-consumer throughput, ours vs kiosk-style polling.

Both sides run against the same private redis-server in the same run. "Ours" is the real worker
process (`CONSUMER_TYPE=noop`, blocking BLMOVE + Lua claim + fenced Lua finish). The baseline
is a worker loop written the way the kiosk's consumer polls: `LLEN`, then `RPOPLPUSH` into a
processing list, `HSET` status updates and `LREM`, sleeping `EMPTY_QUEUE_TIMEOUT` when empty.

Prints one JSON object. Targets on a 2-core machine: p50 <= 5 ms, p99 <= 20 ms, >= 1,000 jobs/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis_consumer.utils.timestamps import now_iso, parse_iso
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer, env_for


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def kiosk_style_worker(port: int, queue: str, empty_sleep: float, stop_after: int) -> None:
    """The baseline loop: poll LLEN, RPOPLPUSH, HSET status, LREM; sleep when the queue is empty."""
    import redis

    r = redis.Redis(port=port, decode_responses=True)
    processing = f"processing-{queue}:kiosk"
    done = 0
    while done < stop_after:
        if r.llen(queue) == 0:
            time.sleep(empty_sleep)
            continue
        key = r.rpoplpush(queue, processing)
        if key is None:
            continue
        r.hset(key, mapping={"status": "started", "identity_started": "kiosk", "updated_at": now_iso(),
                             "started_at": now_iso()})
        r.hset(key, mapping={"status": "done", "output_url": "", "updated_at": now_iso(), "finished_at": now_iso()})
        r.expire(key, 3600)
        r.lrem(processing, 1, key)
        done += 1


def start_ours(server: RedisServer, queue: str) -> subprocess.Popen:
    env = env_for(server, QUEUE=queue, CONSUMER_TYPE="noop", LOG_LEVEL="WARNING", EMPTY_QUEUE_TIMEOUT="5")
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, str(ROOT / "consume_redis_events.py")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_kiosk(server: RedisServer, queue: str, empty_sleep: float, stop_after: int) -> mp.Process:
    proc = mp.Process(target=kiosk_style_worker, args=(server.port, queue, empty_sleep, stop_after), daemon=True)
    proc.start()
    return proc


def measure_pickup(r, queue: str, samples: int, gap: float) -> list[float]:
    """LPUSH one job at a time into an idle queue; latency = started_at - push time."""
    latencies = []
    for i in range(samples):
        key = f"{queue}:pickup:{i}"
        r.hset(key, mapping={"status": "new", "created_at": now_iso()})
        pushed = time.time()
        r.lpush(queue, key)
        wait_until(lambda key=key: r.hget(key, "status") == "done", timeout=60, interval=0.001, message=key)
        latencies.append((parse_iso(r.hget(key, "started_at")).timestamp() - pushed) * 1000)
        time.sleep(gap)
    return latencies


def measure_throughput(r, queue: str, jobs: int, start_worker) -> float:
    """Fill the queue first, start one worker, time until every job is done."""
    pipe = r.pipeline(transaction=False)
    for i in range(jobs):
        key = f"{queue}:tp:{i}"
        pipe.hset(key, mapping={"status": "new", "created_at": now_iso()})
        pipe.lpush(queue, key)
    pipe.execute()
    first, last = f"{queue}:tp:0", f"{queue}:tp:{jobs - 1}"
    worker = start_worker()
    wait_until(lambda: r.hget(last, "status") == "done", timeout=600, interval=0.005, message="throughput run")
    # from the first claim to the last final write, as recorded in the hashes (excludes process start)
    elapsed = parse_iso(r.hget(last, "finished_at")).timestamp() - parse_iso(r.hget(first, "started_at")).timestamp()
    return jobs / elapsed, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (< 60 s)")
    args = parser.parse_args()
    samples = 40 if args.quick else 200
    baseline_samples = 10 if args.quick else 40
    jobs = 3000 if args.quick else 20000
    kiosk_sleep = 1.0 if args.quick else 5.0  # the kiosk's EMPTY_QUEUE_TIMEOUT default is 5 s

    server = RedisServer(appendonly=False).start()
    r = server.client()
    result: dict = {"benchmark": "queue", "quick": args.quick, "kiosk_empty_queue_timeout_s": kiosk_sleep}
    try:
        # ours: idle pickup latency
        ours = start_ours(server, "ours")
        wait_until(lambda: r.zcard("consumers:ours") == 1, message="worker up")
        time.sleep(0.5)
        lat = measure_pickup(r, "ours", samples, gap=0.01)
        ours.terminate()
        ours.wait(30)
        # baseline: idle pickup latency
        kiosk = start_kiosk(server, "kiosk", kiosk_sleep, stop_after=baseline_samples)
        time.sleep(0.2)
        base = measure_pickup(r, "kiosk", baseline_samples, gap=0.013)
        kiosk.join(10)
        # throughput
        tp_ours, proc = measure_throughput(r, "tpours", jobs, lambda: start_ours(server, "tpours"))
        proc.terminate()
        proc.wait(30)
        tp_kiosk, proc = measure_throughput(r, "tpkiosk", jobs,
                                            lambda: start_kiosk(server, "tpkiosk", kiosk_sleep, stop_after=jobs))
        proc.join(30)
        result.update({
            "pickup_p50_ms": round(statistics.median(lat), 3),
            "pickup_p99_ms": round(percentile(lat, 99), 3),
            "pickup_samples": len(lat),
            "baseline_pickup_p50_ms": round(statistics.median(base), 3),
            "baseline_pickup_p99_ms": round(percentile(base, 99), 3),
            "baseline_pickup_samples": len(base),
            "throughput_jobs_per_s": round(tp_ours, 1),
            "baseline_throughput_jobs_per_s": round(tp_kiosk, 1),
            "throughput_jobs": jobs,
            "targets": {"pickup_p50_ms": 5, "pickup_p99_ms": 20, "throughput_jobs_per_s": 1000},
        })
        result["meets_targets"] = (
            result["pickup_p50_ms"] <= 5 and result["pickup_p99_ms"] <= 20 and result["throughput_jobs_per_s"] >= 1000
        )
    finally:
        server.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
