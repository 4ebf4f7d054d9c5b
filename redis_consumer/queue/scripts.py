"""Loads the job protocol's Lua scripts (`queue/lua/*.lua`) and runs them with EVALSHA.

Each `.lua` file is one atomic step, with a header naming every KEYS/ARGV entry and the reply.
Every script that changes a claimed job first checks the job's `claim` fencing token, so a
worker presumed dead (a "zombie") can never overwrite the claim that replaced it. Liveness uses
the Redis server clock (`TIME`). Job hashes are touched by name from inside scripts (not always
declared in KEYS): fine on a single Redis or Sentinel; Redis Cluster would need hash tags.

A line `--#include other.lua` pulls in a shared helper (the zip fan-in count). Scripts run by
SHA; after a Redis restart or `SCRIPT FLUSH` (NOSCRIPT) the source is sent once with EVAL.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.client import NEVER_DECODE
from redis.exceptions import NoScriptError

_INCLUDE = "--#include "


@functools.cache
def source(name: str) -> str:
    """The text of `lua/{name}.lua` with its includes expanded (each helper once per script)."""
    return _expand(name, set())


def _expand(name: str, seen: set[str]) -> str:
    seen.add(name)
    text = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if line.startswith(_INCLUDE):
            helper = line[len(_INCLUDE):].strip().removesuffix(".lua")
            if helper not in seen:
                lines.append(_expand(helper, seen).rstrip("\n"))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


class Script:
    """One Lua step bound to a client: `script(keys=[...], args=[...], raw=False)`.

    `raw=True` returns bytes instead of text (the claim reads fields a producer may have
    written in any encoding without redis-py failing to decode them).
    """

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name
        self.text = source(name)
        self.sha = hashlib.sha1(self.text.encode("utf-8")).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), raw: bool = False) -> Any:
        options = {NEVER_DECODE: True} if raw else {}
        try:
            return self.client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args, **options)
        except NoScriptError:
            return self.client.execute_command("EVAL", self.text, len(keys), *keys, *args, **options)
