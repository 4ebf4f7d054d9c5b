"""`redis-consumer status`: a job's fields as a table or JSON; the exit code tells its state.

Exit codes (for scripts): 0 every job done, 1 a job failed, 3 a job is still running, 4 a key is
unknown (never submitted or expired), 2 a usage or connection error.
"""

from __future__ import annotations

from typing import Any

from ..queue.keys import FINAL_STATUSES
from .common import (
    EXIT_RUNNING,
    add_connection_args,
    check_job_type,
    command,
    connect_redis,
    fields_table,
    load_settings,
    print_json,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="show job fields; exit 0 done, 1 failed, 3 still running",
        description="Show the fields of one or more jobs. Exit code: 0 all done, 1 any failed, "
        "3 any still running, 4 unknown key, 2 usage/connection error.",
    )
    p.add_argument("keys", nargs="+", metavar="KEY", help="job keys printed by submit")
    p.add_argument("--json", action="store_true", help="print {key: fields} as JSON")
    add_connection_args(p)
    p.set_defaults(func=run)


def exit_code(statuses: list[str]) -> int:
    """0 all done, 1 any failed, 3 any not final yet."""
    if any(s == "failed" for s in statuses):
        return 1
    if any(s not in FINAL_STATUSES for s in statuses):
        return EXIT_RUNNING
    return 0


@command
def run(args: Any) -> int:
    client = connect_redis(load_settings(args))
    pipe = client.pipeline(transaction=False)
    for key in args.keys:
        pipe.type(key)
        pipe.hgetall(key)
    replies = pipe.execute(raise_on_error=False)  # HGETALL of a non-hash is reported below
    found: dict[str, dict[str, str]] = {}
    for i, key in enumerate(args.keys):
        kind, fields = replies[2 * i], replies[2 * i + 1]
        check_job_type(key, kind)
        found[key] = fields
    if args.json:
        print_json(found)
    else:
        blocks = []
        for key, fields in found.items():
            blocks.append((f"{key}\n" if len(found) > 1 else "") + fields_table(fields))
        print("\n\n".join(blocks))
    return exit_code([f.get("status", "") for f in found.values()])
