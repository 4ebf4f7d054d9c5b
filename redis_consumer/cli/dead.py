"""`redis-consumer dead`: inspect, requeue or purge a queue's dead letters.

Requeue is one Lua step per call (`queue.DeadLetters`, `queue/lua/dead_letters.lua`): a key
leaves `dead-{queue}`, gets a fresh start (`status=new`, attempts reset, failure fields removed, expiry cleared) and goes back on `{queue}` — so a
requeued job can never be both dead and waiting. Keys whose hash already expired are dropped.
A requeued zip child is un-counted from its waiting parent (so the parent's counters stay exact),
or detached from a parent that already ended.
"""

from __future__ import annotations

import json
from typing import Any

from ..queue import keys
from ..queue.dead_letters import DeadLetters
from .common import (
    CliError,
    add_connection_args,
    command,
    connect_redis,
    load_settings,
    table,
)
from .watch import queue_exists


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "dead",
        help="list, requeue or purge dead letters of a queue",
        description="Jobs land in dead-QUEUE after MAX_ATTEMPTS system failures (or when they keep killing "
        "their worker). list shows them; requeue gives them a fresh start; purge deletes them.",
    )
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (
        ("list", "show dead jobs with their reasons"),
        ("requeue", "move dead jobs back to the queue with attempts reset"),
        ("purge", "delete dead jobs (the dead-list entries, job hashes and logs)"),
    ):
        a = dsub.add_parser(action, help=text, description=text)
        a.add_argument("--queue", "-q", required=True, help="queue name, e.g. segmentation (or segmentation-zip)")
        if action != "list":
            a.add_argument("keys", nargs="*", metavar="KEY", help="only these jobs (default: all)")
        if action == "purge":
            a.add_argument("--yes", action="store_true", help="really delete (required)")
        a.add_argument("--json", action="store_true", help="print data as JSON")
        add_connection_args(a)
        a.set_defaults(func=run)
    p.set_defaults(func=run)


def dead_jobs(client: Any, queue: str) -> list[dict[str, Any]]:
    """Every dead job of `queue`, newest first, with its failure details."""
    return DeadLetters(client, queue).list()


def act(client: Any, queue: str, mode: str, only: list[str] | None = None) -> tuple[int, int]:
    """Requeue or purge `only` (default: all dead jobs); returns (moved, dropped)."""
    letters = DeadLetters(client, queue)
    return letters.purge(only) if mode == "purge" else letters.requeue(only)


@command
def run(args: Any) -> int:
    client = connect_redis(load_settings(args))
    queue = args.queue.strip()
    if not queue_exists(client, queue):
        raise CliError(f"unknown queue {queue!r}: no worker registered it and it holds no jobs")
    if args.action == "list":
        rows = dead_jobs(client, queue)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print(f"no dead jobs in {keys.dead(queue)}")
        else:
            print(table(("key", "status", "type", "attempts", "finished_at", "reason"),
                        [(r["key"], r["status"], r["failure_type"], r["attempts"], r["finished_at"], r["reason"])
                         for r in rows]))
        return 0
    if args.action == "purge" and not args.yes:
        raise CliError("purge deletes jobs for good; add --yes to confirm")
    only = list(dict.fromkeys(args.keys)) if args.keys else None
    moved, dropped = act(client, queue, args.action, only)
    verb = "requeued to " + queue if args.action == "requeue" else "purged"
    if args.json:
        print(json.dumps({"action": args.action, "moved": moved, "skipped": dropped}))
    else:
        print(f"{moved} job(s) {verb}" + (f"; {dropped} skipped (not dead or expired)" if dropped else ""))
    return 0 if not (only and dropped) else 1
