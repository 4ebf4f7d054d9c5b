"""`redis-consumer config`: the effective settings (secrets masked) or the README's settings table.

`--markdown` prints `settings.markdown_table()`, the single source of the README's configuration
section (a test keeps the two equal).
"""

from __future__ import annotations

import json
from typing import Any

from .common import command, load_settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="show the effective settings (secrets masked) or --markdown the settings table",
        description="Print the settings this environment gives a worker (secret values masked), "
        "or every variable with its default and meaning as a Markdown table.",
    )
    p.add_argument("--markdown", action="store_true", help="print the configuration table of every variable")
    p.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    p.set_defaults(func=run)


@command
def run(args: Any) -> int:
    if args.markdown:
        from ..settings import markdown_table

        print(markdown_table())
        return 0
    public = load_settings().public()
    if args.json:
        print(json.dumps(public, indent=2, default=list))
    else:
        width = max(len(k) for k in public)
        for name, value in public.items():
            shown = ",".join(value) if isinstance(value, tuple) else value
            print(f"{name.ljust(width)}  {shown}")
    return 0
