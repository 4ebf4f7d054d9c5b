"""`redis-consumer watch`: a live table per queue (waiting, in-flight, dead, consumers, rate, age).

Everything is read from the protocol's own keys (see `queue/keys.py`), so `watch` works on any
deployment without extra bookkeeping: the numbers are the exporter's `snapshot` (no SCAN per
refresh), and jobs per minute is the change of the per-queue finished counter between two refreshes.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ..metrics.exporter import snapshot
from ..queue import keys
from .common import (
    CliError,
    add_connection_args,
    command,
    connect_redis,
    human_seconds,
    known_queues,
    load_settings,
    table,
)

COLUMNS = ("queue", "waiting", "in-flight", "dead", "consumers", "jobs/min", "oldest")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "watch",
        help="live table per queue: waiting, in-flight, dead, live consumers, jobs/min, oldest job age",
        description="Refresh a table of queue health until Ctrl-C (or once with --once).",
    )
    p.add_argument("--queues", nargs="+", metavar="QUEUE", help="queues to show (default: every known queue)")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="refresh period (default 2)")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--json", action="store_true", help="one JSON object per refresh instead of a table")
    add_connection_args(p)
    p.set_defaults(func=run)


def queue_exists(client: Any, queue: str) -> bool:
    """Known to the deployment: a worker registered it, or one of its lists exists."""
    if client.sismember(keys.QUEUES_SET, queue):
        return True
    if client.exists(queue, keys.dead(queue), keys.consumers(queue)):
        return True
    return next(iter(client.scan_iter(match=keys.processing_prefix(queue) + "*", count=200)), None) is not None


def queue_rows(client: Any, queues: list[str]) -> list[dict[str, Any]]:
    """One row per queue (raw numbers; `finished` is the all-time counter): the exporter's
    `snapshot` plus one pipelined read of the finished counters and the Redis clock."""
    stats = snapshot(client, queues)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for q in queues:
        pipe.get(keys.completed_counter(q))
    (sec, usec), *finished = pipe.execute()
    now = int(sec) + int(usec) / 1e6
    return [{
        "queue": s.queue,
        "waiting": s.waiting,
        "in_flight": s.in_flight,
        "dead": s.dead,
        "consumers": s.consumers,
        "finished": int(done or 0),
        "oldest_age_seconds": round(s.oldest_age, 3) if s.waiting else None,
        "time": now,
    } for s, done in zip(stats, finished)]


def queue_stats(client: Any, queue: str) -> dict[str, Any]:
    """One queue's row."""
    return queue_rows(client, [queue])[0]


def _rate(prev: dict[str, Any] | None, cur: dict[str, Any]) -> float | None:
    if not prev or cur["time"] <= prev["time"]:
        return None
    return max(0, cur["finished"] - prev["finished"]) * 60.0 / (cur["time"] - prev["time"])


def render(rows: list[dict[str, Any]]) -> str:
    return table(COLUMNS, [
        (r["queue"], r["waiting"], r["in_flight"], r["dead"], r["consumers"],
         "-" if r.get("jobs_per_minute") is None else f"{r['jobs_per_minute']:.1f}",
         human_seconds(r["oldest_age_seconds"]) if r["oldest_age_seconds"] is not None else "-")
        for r in rows
    ])


@command
def run(args: Any) -> int:
    if args.interval <= 0:
        raise CliError("--interval must be a positive number of seconds")
    client = connect_redis(load_settings(args))
    if args.queues:
        unknown = [q for q in args.queues if not queue_exists(client, q)]
        if unknown:
            raise CliError(f"unknown queue {unknown[0]!r}: no worker registered it and it holds no jobs")
    found = [] if args.queues else known_queues(client)  # one SCAN for dead-* lists, at start only
    previous: dict[str, dict[str, Any]] = {}
    tty = sys.stdout.isatty()
    while True:
        # queues registered since the start appear too (a cheap SMEMBERS, not a keyspace scan)
        queues = args.queues or sorted(set(found) | set(client.smembers(keys.QUEUES_SET)))
        rows = queue_rows(client, queues) if queues else []
        for row in rows:
            row["jobs_per_minute"] = _rate(previous.get(row["queue"]), row)
            previous[row["queue"]] = row
        if args.json:
            print(json.dumps({"queues": [{k: v for k, v in r.items() if k != "time"} for r in rows]}), flush=True)
        else:
            text = render(rows) if rows else "no queues yet (start a worker or submit a job)"
            if tty and not args.once:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text + ("" if args.once else f"\n\n(refresh every {args.interval:g}s, Ctrl-C to stop)"), flush=True)
        if args.once:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:  # Ctrl-C is how one leaves `watch`: not an error
            return 0
