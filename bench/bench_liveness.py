"""What heartbeats and the reaper cost Redis at 1,000 workers, per candidate HEARTBEAT_INTERVAL/TTL.

Against a private redis-server (append-only, `appendfsync everysec` as in production), N
simulated workers spread over Q queues do exactly what a worker's supervisor thread does every
interval: `Broker.heartbeat()` (the `heartbeat` script) and `Broker.reap(lock_ms=0.8 x interval)`
(`SET NX PX` on the queue's reaper lock, the `reap` script for whoever gets it), phases spread
evenly over the interval. The server's own CPU (`INFO cpu`, user + sys) and commands
(`INFO commandstats`) over a window give the cost. For candidates with a short TTL, one
simulated worker per queue holding a claimed job then stops beating (a SIGKILL as the fleet
sees it) and the time until its job is back on the queue is measured, with 1,000 workers live.

The simulated workers share T client connections (threads), not one each: a real fleet's extra
connections add some per-connection work the figures leave out (idle connections cost Redis
nothing per second). Blocking claims of idle workers (BLMOVE timeouts every EMPTY_QUEUE_TIMEOUT)
do not depend on these settings and are not included.
`at_defaults` is the row of the current `Settings` defaults (added to the candidates if they are
not among them), `at_longest_interval` the cheapest candidate, its same-run baseline.
Usage: `python bench/bench_liveness.py [--workers 1000] [--queues 10] [--quick]`; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis_consumer.queue import keys as rkeys
from redis_consumer.queue.broker import Broker
from redis_consumer.settings import Settings
from tests.helpers.redis_server import RedisServer

CANDIDATES = [(5.0, 30.0), (2.0, 6.0), (1.0, 3.0), (0.5, 2.0)]


def cpu_seconds(r) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_totals(r) -> tuple[int, float]:
    calls = usec = 0
    for name, stats in r.info("commandstats").items():
        if name.removeprefix("cmdstat_") in ("info", "config|resetstat", "hget", "lrange", "llen", "zcard"):
            continue  # the benchmark's own probes
        calls += int(stats["calls"])
        usec += float(stats["usec"])
    return calls, usec


class Fleet:
    """N simulated supervisors on T threads; `stop_beating(ids)` makes some go silent."""

    def __init__(self, server: RedisServer, n: int, queues: int, interval: float, ttl: float, threads: int) -> None:
        self.interval = interval
        self.silent: set[str] = set()
        self.beats = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.workers: list[tuple[int, Broker]] = []
        clients = [server.client() for _ in range(threads)]
        for i in range(n):
            queue = f"bench-q{i % queues}"
            broker = Broker(clients[i % threads], queue, f"sim-{i:04d}", heartbeat_ttl=ttl)
            self.workers.append((i % threads, broker))
        self.threads = [threading.Thread(target=self._run, args=(t, n), daemon=True) for t in range(threads)]

    def start(self) -> Fleet:
        for t in self.threads:
            t.start()
        return self

    def _run(self, thread: int, n: int) -> None:
        mine = [(i, b) for i, (t, b) in enumerate(self.workers) if t == thread]
        start = time.monotonic()
        due = [start + self.interval * i / n for i, _ in mine]
        while not self._stop.is_set():
            k = min(range(len(mine)), key=due.__getitem__)
            wait = due[k] - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            broker = mine[k][1]
            due[k] += self.interval
            if broker.consumer_id in self.silent:
                continue
            broker.heartbeat()
            broker.reap(lock_ms=int(self.interval * 800))  # as Worker._beat_and_reap
            with self._lock:
                self.beats += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(5)


def measure(server: RedisServer, n: int, queues: int, interval: float, ttl: float, threads: int,
            window: float, detect: bool) -> dict:
    r = server.client()
    r.flushall()
    fleet = Fleet(server, n, queues, interval, ttl, threads).start()
    try:
        time.sleep(max(interval * 1.5, 1.0))  # every worker has beaten once
        beats0, cpu0, (calls0, usec0), t0 = fleet.beats, cpu_seconds(r), command_totals(r), time.monotonic()
        time.sleep(window)
        beats1, cpu1, (calls1, usec1), t1 = fleet.beats, cpu_seconds(r), command_totals(r), time.monotonic()
        elapsed = t1 - t0
        out = {
            "heartbeat_interval": interval, "heartbeat_ttl": ttl, "workers": n, "queues": queues,
            "beats_per_second": round((beats1 - beats0) / elapsed, 1),
            "target_beats_per_second": round(n / interval, 1),
            "redis_commands_per_second": round((calls1 - calls0) / elapsed, 1),
            "redis_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 2),
            "redis_command_usec_per_second": round((usec1 - usec0) / elapsed, 1),
            "redis_cpu_usec_per_worker_per_second": round(1e6 * (cpu1 - cpu0) / elapsed / n, 2),
        }
        if detect:
            out["rerun_after_silence_seconds"] = _detect(r, fleet, queues)
        return out
    finally:
        fleet.stop()


def _detect(r, fleet: Fleet, queues: int) -> dict:
    """One worker per queue claims a job and goes silent; seconds until each job is queued again."""
    victims = {}
    for _, broker in fleet.workers:
        if broker.queue not in victims:
            victims[broker.queue] = broker
        if len(victims) == queues:
            break
    jobs = {}
    for queue, broker in victims.items():
        key = f"{queue}:job:{uuid.uuid4().hex}"
        broker.enqueue(key, {"status": "new"})
        claimed = broker.try_claim()
        assert claimed is not None and claimed.outcome == "ok"
        jobs[queue] = key
    silent_at = time.monotonic()
    fleet.silent.update(b.consumer_id for b in victims.values())
    back: dict[str, float] = {}
    deadline = silent_at + fleet.interval * 4 + max(b.heartbeat_ttl for b in victims.values()) + 10
    while len(back) < len(jobs) and time.monotonic() < deadline:
        for queue, key in jobs.items():
            if queue not in back and r.lrange(queue, -1, -1) == [key]:
                back[queue] = time.monotonic() - silent_at
        time.sleep(0.02)
    values = sorted(back.values())
    assert len(values) == len(jobs), f"only {len(values)} of {len(jobs)} jobs came back"
    assert all(r.zscore(rkeys.consumers(q), b.consumer_id) is None for q, b in victims.items())
    return {"max": round(values[-1], 2), "median": round(values[len(values) // 2], 2), "jobs": len(values)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--queues", type=int, default=10)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="shorter windows")
    args = p.parse_args()
    defaults = Settings.from_env({})
    default_pair = (defaults.HEARTBEAT_INTERVAL, defaults.HEARTBEAT_TTL)
    candidates = CANDIDATES + ([default_pair] if default_pair not in CANDIDATES else [])
    server = RedisServer(appendonly=True, extra=["--appendfsync", "everysec"]).start()
    results = []
    try:
        for interval, ttl in candidates:
            window = max(2 * interval, 3.0 if args.quick else 5.0)
            results.append(measure(server, args.workers, args.queues, interval, ttl, args.threads, window,
                                   detect=ttl <= 10 or (interval, ttl) == default_pair))
    finally:
        server.cleanup()
    at_defaults = next(r for r in results if (r["heartbeat_interval"], r["heartbeat_ttl"]) == default_pair)
    print(json.dumps({
        "bench": "liveness", "quick": args.quick, "workers": args.workers, "queues": args.queues,
        "defaults": {"heartbeat_interval": default_pair[0], "heartbeat_ttl": default_pair[1]},
        "at_defaults": at_defaults,  # the row the report quotes; the others are in `results`
        "at_longest_interval": max(results, key=lambda r: r["heartbeat_interval"]),
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
