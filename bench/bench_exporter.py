"""Cost of one queue-exporter scrape: flat in the number of job hashes, linear in queues + workers.

In one run against a private redis-server: scrape time and Redis command count for (a) a small
keyspace, (b) the same queues and workers plus many more finished job hashes, (c) more queues and
workers. Prints one JSON object; targets: hashes_ratio ~ 1 (cost does not follow the keyspace),
commands identical in (a) and (b).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis_consumer.metrics import exporter
from redis_consumer.queue.broker import Broker
from tests.helpers.redis_server import RedisServer


def populate(rds, queues: int, workers: int, waiting: int, in_flight: int) -> None:
    for q in range(queues):
        name = f"queue{q}"
        pipe = rds.pipeline(transaction=False)
        for i in range(waiting + workers * in_flight):
            key = f"{name}:img{i}.tif:{i:032x}"
            pipe.hset(key, mapping={"status": "new", "created_at": "2026-01-01T00:00:00+00:00"})
            pipe.lpush(name, key)
        pipe.execute()
        for w in range(workers):
            broker = Broker(rds, name, f"w{w}", heartbeat_ttl=60.0)
            broker.heartbeat()
            for _ in range(in_flight):
                broker.pop(0.1)


def add_hashes(rds, n: int) -> None:
    pipe = rds.pipeline(transaction=False)
    for i in range(n):
        pipe.hset(f"queue0:done{i}.tif:{i:032x}", mapping={"status": "done", "output_url": "x" * 40})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def measure(rds, repeat: int) -> dict:
    for _ in range(5):  # warm the connection and Redis' caches
        exporter.snapshot(rds)
    rds.config_resetstat()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        exporter.snapshot(rds)
        times.append(time.perf_counter() - t)
    stats = rds.info("commandstats")
    calls = sum(v["calls"] for k, v in stats.items() if not k.startswith(("cmdstat_config", "cmdstat_info")))
    times.sort()
    return {"median_ms": round(times[len(times) // 2] * 1000, 3), "commands_per_scrape": calls / repeat,
            "keys": rds.dbsize()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    extra_hashes, repeat = (50_000, 200) if args.quick else (500_000, 1000)
    server = RedisServer(appendonly=False).start()
    try:
        rds = server.client()
        populate(rds, queues=3, workers=5, waiting=200, in_flight=2)
        small = measure(rds, repeat)
        add_hashes(rds, extra_hashes)
        time.sleep(1.0 if args.quick else 4.0)  # let Redis finish rehashing its grown keyspace (serverCron), not our cost
        big = measure(rds, repeat)
        rds.flushall()
        populate(rds, queues=12, workers=20, waiting=50, in_flight=1)
        wide = measure(rds, repeat)
    finally:
        server.cleanup()
    result = {
        "bench": "exporter_scrape",
        "small_keyspace": small,
        "plus_job_hashes": big,
        "more_queues_and_workers": {"queues": 12, "workers_per_queue": 20, **wide},
        "hashes_ratio": round(big["median_ms"] / small["median_ms"], 3),
        "same_commands_with_more_hashes": small["commands_per_scrape"] == big["commands_per_scrape"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
