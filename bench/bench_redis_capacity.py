"""How many jobs one Redis primary can carry: Redis commands and Redis CPU per job, measured.

Against a private redis-server (append-only file, `appendfsync everysec` as in production):
1. a real worker process (`CONSUMER_TYPE=noop`) runs N jobs; `INFO commandstats` deltas give the
   commands and the server CPU microseconds per job (minus what an idle worker's heartbeats cost
   over the same time, measured first);
2. the same for the real `segmentation` consumer (dev model server, local-folder bucket), whose
   jobs also write stage statuses, timings and job-log lines;
3. `redis-benchmark` (no pipelining, 50 clients) measures the plain command rate this Redis sustains
   here: the baseline. Per-command overhead (network, parsing) = 1/rate - its own usec_per_call.

Per job: `commands_per_job` = commands the worker and producer send (round trips),
`commands_total_per_job` = those plus the commands run inside our Lua scripts,
`redis_usec_per_job` = command time (commandstats usec: inside the commands and scripts only),
`redis_cpu_usec_per_job` = the Redis main thread's CPU (INFO cpu: those commands plus reading and
parsing requests, writing replies and the AOF, the event loop), both net of the idle worker's
cost. The bench waits on the last job's status (one HGET per poll): polling every job's status
would cost Redis more than the jobs and thrash the caches the jobs' commands run in.
Targets: <= 70 us per null job, segmentation <= 2x the null job's. `noop` submits the jobs one by
one while the worker runs (it keeps up, so it claims them one at a time); `noop_backlog` queues
the same jobs at once (one LPUSH after their hashes), as a fleet at capacity finds them, so the
worker's batches (CLAIM_BATCH) form.
4. null jobs paced like the segmentation jobs (`noop_paced`: bench/paced_noop.py sleeps each job the
   segmentation's mean wall time): Redis costs more per command when it wakes from idle between slow
   jobs, so `segmentation_vs_noop_paced_redis_usec` is what the segmentation's own writes add at the
   same pacing, beside `segmentation_vs_noop_redis_usec` against back-to-back null jobs.

Model: seconds of Redis main thread per job = commands x overhead + sum(usec_per_call x calls),
so jobs/s per Redis = 1 / that. Prints one JSON object.
Usage: `python bench/bench_redis_capacity.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from redis_consumer.queue import keys as rkeys
from tests.helpers.chaos_procs import WorkerProcess, submit, worker_env
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer


def commandstats(r) -> dict[str, tuple[int, float]]:
    """command -> (calls, total usec)."""
    out = {}
    for name, stats in r.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = (int(stats["calls"]), float(stats["usec"]))
    return out


def main_thread_cpu(r) -> float:
    """Seconds of CPU the Redis main thread has used (INFO cpu): commands plus what commandstats
    leaves out (reading and parsing requests, writing replies, the AOF write, the event loop)."""
    cpu = r.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def delta(after, before) -> dict[str, tuple[int, float]]:
    d = {}
    for k, (calls, usec) in after.items():
        c0, u0 = before.get(k, (0, 0.0))
        if calls - c0:
            d[k] = (calls - c0, usec - u0)
    return d


#: the benchmark's own probes (sent by this process, not by the worker); inside Lua they count
PROBES = {"info", "config|resetstat", "config", "llen", "hget", "hgetall", "ping"}


def totals(d) -> tuple[int, float]:
    skip = PROBES
    calls = sum(c for k, (c, _) in d.items() if k not in skip)
    usec = sum(u for k, (_, u) in d.items() if k not in skip)
    return calls, usec


def _submit_backlog(r, queue: str, n: int, fields: dict[str, str]) -> list[str]:
    """n kiosk-shaped job hashes, then all their keys in ONE LPUSH: the worker finds a backlog."""
    probe = submit(r, queue, f"{queue}:probe:{uuid.uuid4().hex}", **fields)  # the same fields submit writes
    data = r.hgetall(probe)
    r.delete(probe)
    r.lrem(queue, 0, probe)
    keys = [f"{queue}:bench.tif:{uuid.uuid4().hex}" for _ in range(n)]
    pipe = r.pipeline(transaction=False)
    for key in keys:
        pipe.hset(key, mapping=data)
    pipe.execute()
    r.lpush(queue, *keys)
    return keys


def run_jobs(r, env: dict[str, str], queue: str, n: int, fields: dict[str, str], workdir: str,
             idle_seconds: float, inner_counts: dict[str, int] | None = None, backlog: bool = False) -> dict:
    """Run n jobs; with `inner_counts` (from a MONITOR run) compute CPU without MONITOR's own cost.

    `backlog`: the n jobs are queued at once (one LPUSH) instead of one by one while the worker runs."""
    worker = WorkerProcess(env, log_dir=workdir).start()
    try:
        wait_until(lambda: r.zcard(rkeys.consumers(queue)) > 0, 60, interval=0.05, message="the worker's heartbeat")
        time.sleep(0.5)
        b0, cpu0 = commandstats(r), main_thread_cpu(r)
        time.sleep(idle_seconds)  # idle cost: heartbeats, reaper, blocking claim timeouts
        b1, cpu1 = commandstats(r), main_thread_cpu(r)
        idle_calls, idle_usec = totals(delta(b1, b0))
        idle_rate = (idle_calls / idle_seconds, idle_usec / idle_seconds)
        monitor = _Monitor(r) if inner_counts is None else None
        keys = []
        start = time.monotonic()
        if backlog:
            keys = _submit_backlog(r, queue, n, fields)
        for _ in range(0 if backlog else n):
            keys.append(submit(r, queue, f"{queue}:bench.tif:{uuid.uuid4().hex}", **fields))
        # one worker takes the queue in order: wait on the last job (one HGET per poll, not one per
        # job, so the probes barely show in the main thread's CPU), then check them all
        wait_until(lambda: r.hget(keys[-1], "status") in ("done", "failed"), 600, interval=0.05,
                   message="the last job final")
        wait_until(lambda: all(s in ("done", "failed") for s in _statuses(r, keys)), 600, interval=0.05,
                   message="every job final")
        wall = time.monotonic() - start
        b2, cpu2 = commandstats(r), main_thread_cpu(r)
        wire, inner = monitor.stop() if monitor else ({}, dict(inner_counts or {}))
    finally:
        worker.terminate(30)
    d = delta(b2, b1)
    calls, usec = totals(d)
    # commands run inside Lua scripts are counted by commandstats too, and their time is already
    # inside EVALSHA's: take them out (counts seen by MONITOR, time at their average cost)
    for name, count in inner.items():
        if name in PROBES:  # not in the totals above, so nothing to take out
            continue
        c, u = d.get(name, (0, 0.0))
        if c:
            calls -= count
            usec -= u / c * min(count, c)
    # the producer's own HSET + LPUSH per job are part of a job's cost too: kept in
    calls -= idle_rate[0] * wall
    usec -= idle_rate[1] * wall
    # the probes' own INFO/HGET cost stays in (small beside a job; over-, never under-states)
    cpu = (cpu2 - cpu1) - (cpu1 - cpu0) / idle_seconds * wall
    failed = sum(1 for s in _statuses(r, keys) if s != "done")
    per_cmd = {k: round(c / n, 2) for k, (c, _) in sorted(d.items(), key=lambda kv: -kv[1][0])
               if k not in ("info", "hget", "ping")}
    return {"jobs": n, "failed": failed, "wall_seconds": round(wall, 2),
            "commands_per_job": round(sum(wire.values()) / n, 2) if wire else None,
            "redis_usec_per_job": round(usec / n, 1),
            "redis_cpu_usec_per_job": round(cpu * 1e6 / n, 1),
            "wire_by_command_per_job": {k: round(v / n, 2) for k, v in sorted(wire.items(), key=lambda kv: -kv[1])},
            "commands_inside_lua_per_job": round(sum(inner.values()) / n, 2),
            "commands_total_per_job": round((sum(wire.values()) + sum(inner.values())) / n, 2) if wire else None,
            "idle_commands_per_second": round(idle_rate[0], 2), "by_command_per_job": per_cmd,
            "_inner": {k: v for k, v in inner.items()}}


class _Monitor:
    """Counts commands by source with MONITOR: from clients (round trips) vs from inside Lua."""

    def __init__(self, r) -> None:
        import threading

        self.wire: dict[str, int] = {}
        self.inner: dict[str, int] = {}
        self._mon = r.connection_pool.connection_class(**r.connection_pool.connection_kwargs)
        self._mon.connect()
        self._mon.send_command("MONITOR")
        self._mon.read_response()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                line = self._mon.read_response(timeout=0.2)
            except Exception:  # noqa: BLE001 - timeout or closed: check the stop flag
                time.sleep(0.01)
                continue
            if not line or not isinstance(line, str) or '"' not in line:
                continue
            source = line.split("[", 1)[1].split("]", 1)[0] if "[" in line else ""
            name = line.split('"', 2)[1].lower()
            bucket = self.inner if " lua" in f" {source}" else self.wire
            if name == "monitor" or (bucket is self.wire and name in ("info", "hget", "ping")):
                continue  # this process's probes; a worker's HGET inside a script counts
            bucket[name] = bucket.get(name, 0) + 1

    def stop(self) -> tuple[dict[str, int], dict[str, int]]:
        time.sleep(0.3)
        self._stop = True
        self._thread.join(2)
        self._mon.disconnect()
        return self.wire, self.inner


def _statuses(r, keys):
    p = r.pipeline(transaction=False)
    for k in keys:
        p.hget(k, "status")
    return p.execute()


def redis_benchmark(port: int, requests: int) -> dict:
    """Plain command rate (ops/s) for a mix like ours; no pipelining, 50 clients."""
    exe = shutil.which("redis-benchmark")
    if not exe:
        return {}
    out = subprocess.run([exe, "-p", str(port), "-n", str(requests), "-c", "50", "-t", "set,get,lpush,rpop,hset",
                          "--csv", "-q"], capture_output=True, text=True, timeout=300, check=False).stdout
    rates = {}
    for line in out.splitlines():
        parts = [p.strip('"') for p in line.split(",")]
        if len(parts) >= 2 and parts[0] and parts[0] != "test":
            try:
                rates[parts[0].split()[0].lower()] = float(parts[1])
            except ValueError:
                continue
    return rates


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    n_noop, n_seg, n_bench, idle = (300, 20, 100_000, 3.0) if args.quick else (2000, 300, 500_000, 10.0)
    workdir = tempfile.mkdtemp(prefix="rc-capacity-")
    server = RedisServer(appendonly=True, extra=["--appendfsync", "everysec"]).start()
    r = server.client()
    result: dict = {}
    try:
        base = worker_env(REDIS_URL=server.url, LOG_LEVEL="WARNING")
        base.update(HEARTBEAT_INTERVAL="2", HEARTBEAT_TTL="6", EMPTY_QUEUE_TIMEOUT="5")  # production defaults
        noop_env = {**base, "QUEUE": "cap-noop", "CONSUMER_TYPE": "noop"}
        counted = run_jobs(r, noop_env, "cap-noop", n_noop, {"input_file_name": "x.tif"}, workdir, idle)
        result["noop"] = _merge(counted, run_jobs(r, noop_env, "cap-noop", n_noop, {"input_file_name": "x.tif"},
                                                  workdir, idle, inner_counts=counted.pop("_inner")))
        # the same null jobs queued all at once (a fleet at capacity has a backlog): batches form
        counted = run_jobs(r, noop_env, "cap-noop", n_noop, {"input_file_name": "x.tif"}, workdir, idle, backlog=True)
        result["noop_backlog"] = _merge(counted, run_jobs(r, noop_env, "cap-noop", n_noop, {"input_file_name": "x.tif"},
                                                          workdir, idle, inner_counts=counted.pop("_inner"),
                                                          backlog=True))
        counted = _segmentation(r, base, n_seg, workdir, idle, None)
        result["segmentation"] = _merge(counted, _segmentation(r, base, n_seg, workdir, idle, counted.pop("_inner")))
        # null jobs paced like the segmentation jobs (each sleeps their mean wall time): same claim/finish
        # path, same idle gaps in Redis between jobs, none of the segmentation's own writes
        pace = result["segmentation"]["wall_seconds"] / n_seg
        paced_env = {**base, "QUEUE": "cap-paced", "CONSUMER_TYPE": "paced_noop:PacedNoopConsumer",
                     "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "bench")))}
        paced_fields = {"input_file_name": "x.tif", "sleep_seconds": f"{pace:.4f}"}
        counted = run_jobs(r, paced_env, "cap-paced", n_seg, paced_fields, workdir, idle)
        result["noop_paced"] = _merge(counted, run_jobs(r, paced_env, "cap-paced", n_seg, paced_fields, workdir, idle,
                                                        inner_counts=counted.pop("_inner")))
        result["noop_paced"]["sleep_seconds"] = round(pace, 4)
        r.config_resetstat()
        rates = redis_benchmark(server.port, n_bench)
        simple = commandstats(r)
    finally:
        server.cleanup()
    result["redis_benchmark_ops_per_second"] = rates
    if rates:
        rate = sorted(rates.values())[len(rates) // 2]  # median of the plain commands
        calls = sum(c for k, (c, _) in simple.items() if k in rates)
        usec = sum(u for k, (_, u) in simple.items() if k in rates)
        overhead_usec = max(0.0, 1e6 / rate - (usec / calls if calls else 0.0))
        result["plain_command_ops_per_second"] = round(rate)
        result["overhead_usec_per_command"] = round(overhead_usec, 2)
        for kind in ("noop", "segmentation"):
            if kind in result and result[kind].get("commands_per_job"):
                job = result[kind]
                per_job_usec = job["commands_per_job"] * overhead_usec + job["redis_usec_per_job"]
                job["jobs_per_second_per_redis"] = round(1e6 / per_job_usec)
                job["jobs_per_day_per_redis"] = round(86400 * 1e6 / per_job_usec)
    noop_us = result.get("noop", {}).get("redis_usec_per_job")
    seg_us = result.get("segmentation", {}).get("redis_usec_per_job")
    result["targets"] = {"noop_redis_usec_per_job": 70, "segmentation_vs_noop": 2.0}
    if noop_us and seg_us:
        result["segmentation_vs_noop_redis_usec"] = round(seg_us / noop_us, 2)
    paced_us = result.get("noop_paced", {}).get("redis_usec_per_job")
    if paced_us and seg_us:
        result["segmentation_vs_noop_paced_redis_usec"] = round(seg_us / paced_us, 2)
        result["meets_targets"] = noop_us <= 70 and seg_us <= 2 * noop_us
    cpu = {k: result.get(k, {}).get("redis_cpu_usec_per_job") for k in ("noop", "segmentation")}
    if cpu["noop"] and cpu["segmentation"]:
        result["segmentation_vs_noop_redis_cpu"] = round(cpu["segmentation"] / cpu["noop"], 2)
        result["meets_cpu_targets"] = cpu["noop"] <= 70 and cpu["segmentation"] <= 2 * cpu["noop"]
    print(json.dumps(result))
    return 0


def _merge(counted: dict, timed: dict) -> dict:
    """Command counts from the MONITOR run, Redis CPU from the run without MONITOR."""
    out = dict(counted)
    out["redis_usec_per_job"] = timed["redis_usec_per_job"]
    out["redis_cpu_usec_per_job"] = timed["redis_cpu_usec_per_job"]
    out["redis_cpu_usec_per_job_under_monitor"] = counted["redis_cpu_usec_per_job"]
    out["redis_usec_per_job_under_monitor"] = counted["redis_usec_per_job"]
    out["wall_seconds"] = timed["wall_seconds"]
    out.pop("_inner", None)
    return out


def _segmentation(r, base: dict[str, str], n: int, workdir: str, idle: float, inner) -> dict:
    import numpy as np
    import tifffile

    from tests.helpers.model_server import ModelServer

    bucket = Path(workdir) / "bucket"
    (bucket / "uploads").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tifffile.imwrite(bucket / "uploads" / "cells.tif", (rng.random((256, 256)) * 255).astype("uint8"))
    model = ModelServer().start()
    try:
        env = {**base, "QUEUE": "cap-seg", "CONSUMER_TYPE": "segmentation", "STORAGE_BUCKET": f"file://{bucket}",
               "OUTPUT_URL_MODE": "key", "TF_HOST": "127.0.0.1", "TF_PORT": str(model.port)}
        return run_jobs(r, env, "cap-seg", n, {"input_file_name": "uploads/cells.tif", "original_name": "cells.tif",
                                               "model_name": "NuclearSegmentation", "model_version": "1"},
                        workdir, idle, inner_counts=inner)
    finally:
        model.stop()


if __name__ == "__main__":
    sys.exit(main())
