"""`redis-consumer logs`: a job's own story, stage by stage, from its capped Redis log list.

Workers append each job's lines to `logs:{job_key}` (capped at JOB_LOG_LINES, expiring with the
job) and put the full log into the result zip. `--follow` polls the list and prints new lines
until the job is final; the exit code then follows `status` (0 done, 1 failed).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..queue import keys
from ..queue.keys import FINAL_STATUSES
from .common import (
    CliError,
    add_connection_args,
    command,
    connect_redis,
    load_settings,
    no_job,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "logs",
        help="print a job's log lines; --follow streams them until the job ends",
        description="Print the log lines workers recorded for one job (claim, stages, outcome).",
    )
    p.add_argument("key", metavar="KEY", help="job key printed by submit")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the job is done or failed")
    p.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="poll period with --follow")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop following after this long")
    p.add_argument("--json", action="store_true", help="print the lines as a JSON list (not with --follow)")
    add_connection_args(p)
    p.set_defaults(func=run)


def new_lines(seen_last: str | None, lines: list[str]) -> list[str]:
    """Lines after the last one already printed (all of them if it was trimmed away)."""
    if seen_last is None:
        return lines
    for i in range(len(lines) - 1, -1, -1):
        if lines[i] == seen_last:
            return lines[i + 1:]
    return lines


@command
def run(args: Any) -> int:
    client = connect_redis(load_settings(args))
    name = keys.job_log(args.key)
    exists = client.exists(args.key)
    lines = client.lrange(name, 0, -1)
    if not exists and not lines:
        raise no_job(args.key)
    if args.json:
        if args.follow:
            raise CliError("--json lists the lines recorded so far; it cannot be combined with --follow")
        print(json.dumps(lines))
        return 0
    for line in lines:
        print(line, flush=True)
    if not args.follow:
        if not lines:
            print(f"(no log lines yet; status {client.hget(args.key, 'status') or 'unknown'})")
        return 0
    last = lines[-1] if lines else None
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        status = client.hget(args.key, "status")
        lines = client.lrange(name, 0, -1)
        for line in new_lines(last, lines):
            print(line, flush=True)
            last = line
        if status is None or status in FINAL_STATUSES:
            return 0 if status == "done" else 1
        if deadline is not None and time.monotonic() >= deadline:
            return 3
        time.sleep(args.interval)
