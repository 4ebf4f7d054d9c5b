"""Null-consumer cost of ONE real worker process: its own CPU per job, jobs/s and Redis CPU per job.

The worker (`consume_redis_events.py`, `CONSUMER_TYPE=noop`, METRICS_PORT as given) starts on an
empty queue of a private redis-server and settles; then N job hashes are written and their keys
pushed in ONE `LPUSH`, and we wait for the last one to be `done`. Figures for that phase only
(start-up excluded):
- `worker_cpu_us_per_job`: the worker process's CPU time (user + system, every thread, psutil)
  over the phase, divided by N: the Python the worker runs per job.
- `null_jobs_per_s`: N over first `started_at` -> last `finished_at` (as recorded in the hashes).
- `redis_cpu_us_per_job`, `redis_commands_per_job`: INFO cpu / commandstats deltas of the phase.

Same-run floor (`broker_loop`): a tight loop in this process calling the broker directly (claim,
then the final write that claims the next job, claiming ahead or in batches as CLAIM_AHEAD* and
CLAIM_BATCH in the environment tell a worker to), no worker around it: its CPU per job is what the
queue protocol costs the client; `worker_cpu_vs_broker_loop` is the worker's CPU over it.

`--tree DIR` (repeatable) runs the worker from another checkout of the project (e.g. a `git
archive` of main) so a change is measured against its same-run baseline: trees are interleaved
`--reps` times and medians reported, plus each tree's ratio to the first one; the top-level
figures are the last tree's. Prints one JSON object.
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
sys.path.insert(0, str(ROOT))

import psutil

from redis_consumer.utils.timestamps import now_iso, parse_iso
from tests.helpers.net import wait_until
from tests.helpers.redis_server import RedisServer, env_for


def redis_cost(r) -> tuple[int, float]:
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
    return calls, cpu["used_cpu_sys"] + cpu["used_cpu_user"]


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def one_run(server: RedisServer, tree: Path, jobs: int, run: int, metrics: bool) -> dict:
    r = server.client()
    r.flushall()
    queue = f"nullq{run}"
    env = env_for(server, QUEUE=queue, CONSUMER_TYPE="noop", LOG_LEVEL="WARNING", EMPTY_QUEUE_TIMEOUT="5",
                  METRICS_PORT="0")
    if metrics:
        from tests.helpers.net import free_port

        env["METRICS_PORT"] = str(free_port())
    env["PYTHONPATH"] = str(tree)
    proc = subprocess.Popen([sys.executable, str(tree / "consume_redis_events.py")], env=env, cwd=tree,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: r.zcard(f"consumers:{queue}") >= 1, timeout=60, interval=0.02, message="worker up")
        time.sleep(1.0)  # warm-up thread and first heartbeat done
        ps = psutil.Process(proc.pid)
        pipe = r.pipeline(transaction=False)
        names = [f"{queue}:tp:{i}" for i in range(jobs)]
        stamp = now_iso()
        for key in names:
            pipe.hset(key, mapping={"status": "new", "created_at": stamp})
        pipe.execute()
        c0, rcpu0 = redis_cost(r)
        cpu0 = cpu_seconds(ps)
        r.lpush(queue, *names)
        last = names[0]  # LPUSH + BLMOVE RIGHT: the first name is claimed first, the last one last
        wait_until(lambda: r.hget(names[-1], "status") == "done", timeout=300, interval=0.005, message="run")
        cpu1 = cpu_seconds(ps)
        c1, rcpu1 = redis_cost(r)
        first_start = parse_iso(r.hget(last, "started_at")).timestamp()
        last_end = parse_iso(r.hget(names[-1], "finished_at")).timestamp()
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return {"worker_cpu_us_per_job": (cpu1 - cpu0) * 1e6 / jobs,
            "null_jobs_per_s": jobs / max(1e-9, last_end - first_start),
            "redis_cpu_us_per_job": (rcpu1 - rcpu0) * 1e6 / jobs,
            "redis_commands_per_job": (c1 - c0 - 1) / jobs}


def broker_loop(server: RedisServer, jobs: int) -> dict:
    """The floor: claim + finish (with the next claim riding on it) called straight on a Broker."""
    from redis_consumer.queue.broker import Broker
    from redis_consumer.settings import Settings

    r = server.client()
    r.flushall()
    queue = "loopq"
    names = [f"{queue}:{i}" for i in range(jobs)]
    pipe = r.pipeline(transaction=False)
    stamp = now_iso()
    for key in names:
        pipe.hset(key, mapping={"status": "new", "created_at": stamp})
    pipe.execute()
    r.lpush(queue, *names)
    broker = Broker(server.client(), queue, "loop-1")
    broker.prefetch = lambda: True
    ahead = Settings.from_env({k: v for k, v in os.environ.items() if k.startswith("CLAIM_")})
    broker.claim_ahead, broker.claim_ahead_max_seconds = ahead.CLAIM_AHEAD, ahead.CLAIM_AHEAD_MAX_SECONDS  # as a worker
    broker.claim_batch = ahead.CLAIM_BATCH
    c0, rcpu0 = redis_cost(r)
    cpu0, t0 = time.process_time(), time.perf_counter()
    done = 0
    while done < jobs:
        claimed = broker.claim_next(1.0)
        if claimed is None or claimed.job is None:
            continue
        broker.finish(claimed.job, "done", {"output_url": "", "output_file_name": "", "total_time": 0.0001},
                      log_lines=[f"{stamp} claimed", f"{stamp} done"])
        done += 1
    cpu1, t1 = time.process_time(), time.perf_counter()
    c1, rcpu1 = redis_cost(r)
    broker.release_all()
    return {"worker_cpu_us_per_job": (cpu1 - cpu0) * 1e6 / jobs, "null_jobs_per_s": jobs / (t1 - t0),
            "redis_cpu_us_per_job": (rcpu1 - rcpu0) * 1e6 / jobs, "redis_commands_per_job": (c1 - c0) / jobs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=5000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 jobs, 2 repetitions")
    ap.add_argument("--tree", action="append", default=None, help="project checkout to run (default: this one)")
    ap.add_argument("--metrics", action="store_true", help="run the worker with its metrics middleware")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.reps = 2000, 2
    trees = [Path(t).resolve() for t in (args.tree or [str(ROOT)])]
    server = RedisServer(appendonly=False).start()
    runs: dict[str, list[dict]] = {str(t): [] for t in trees}
    loops: list[dict] = []
    try:
        n = 0
        for _ in range(args.reps):
            loops.append(broker_loop(server, args.jobs))
            for tree in trees:
                n += 1
                row = one_run(server, tree, args.jobs, n, args.metrics)
                runs[str(tree)].append(row)
                print(f"[bench_null_worker] {tree.name}: {json.dumps({k: round(v, 1) for k, v in row.items()})}",
                      file=sys.stderr, flush=True)
    finally:
        server.cleanup()
    out: dict = {"bench": "null_worker", "jobs": args.jobs, "reps": args.reps, "metrics": args.metrics, "trees": {}}
    for tree, rows in runs.items():
        out["trees"][tree] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out["broker_loop"] = {k: statistics.median(r[k] for r in loops) for k in loops[0]}
    for med in out["trees"].values():
        med["worker_cpu_vs_broker_loop"] = med["worker_cpu_us_per_job"] / out["broker_loop"]["worker_cpu_us_per_job"]
    base = out["trees"][str(trees[0])]
    for tree in trees[1:]:
        med = out["trees"][str(tree)]
        med["worker_cpu_ratio_to_first"] = med["worker_cpu_us_per_job"] / base["worker_cpu_us_per_job"]
        med["jobs_per_s_ratio_to_first"] = med["null_jobs_per_s"] / base["null_jobs_per_s"]
        med["redis_cpu_ratio_to_first"] = med["redis_cpu_us_per_job"] / base["redis_cpu_us_per_job"]
    # headline: the last tree given (this checkout by default)
    out.update({k: v for k, v in out["trees"][str(trees[-1])].items() if not k.endswith("_to_first")})
    out["broker_loop_cpu_us_per_job"] = out["broker_loop"]["worker_cpu_us_per_job"]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
