"""`redis-consumer config`: the effective settings (secrets masked) or the README's settings table.

`--markdown` prints `markdown()`: the core settings table, then the own settings (`settings_spec`)
of every built-in consumer type; it is the single source of the README's configuration section
(a test keeps the two equal). Without `--markdown` the settings of the chosen CONSUMER_TYPE's
plug-in are read, validated and listed too.
"""

from __future__ import annotations

import json
from typing import Any

from .common import command, load_settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="show the effective settings (secrets masked) or --markdown the settings table",
        description="Print the settings this environment gives a worker (secret values masked, the "
        "CONSUMER_TYPE's own settings included), or every variable with its default and meaning as a "
        "Markdown table.",
    )
    p.add_argument("--markdown", action="store_true", help="print the configuration table of every variable")
    p.add_argument("--json", action="store_true", help="print the effective settings as JSON")
    p.set_defaults(func=run)


def builtin_consumer_specs() -> dict[str, tuple]:
    """Built-in consumer type -> its `settings_spec` (aliases of one class listed once)."""
    from ..consumers import registry
    from ..settings_base import specs_of

    out: dict[str, tuple] = {}
    seen: set[str] = set()
    for name, path in registry.BUILTIN.items():
        if path in seen:
            continue
        seen.add(path)
        specs = specs_of(getattr(registry.load(name), "settings_spec", ()))
        if specs:
            out[name] = specs
    return out


def markdown() -> str:
    """The README's whole configuration table(s)."""
    from ..settings import markdown_table

    return markdown_table(builtin_consumer_specs())


@command
def run(args: Any) -> int:
    if args.markdown:
        print(markdown())
        return 0
    from ..consumers import registry

    settings = load_settings()
    settings = settings.for_consumer(registry.load(settings.CONSUMER_TYPE))  # ConfigError: exit 2
    public = settings.public()
    if args.json:
        print(json.dumps(public, indent=2, default=list))
    else:
        width = max(len(k) for k in public)
        for name, value in public.items():
            shown = ",".join(value) if isinstance(value, tuple) else value
            print(f"{name.ljust(width)}  {shown}")
    return 0
