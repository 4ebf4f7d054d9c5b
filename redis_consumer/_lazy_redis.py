"""Defer `redis.asyncio`'s package code until something uses it: the worker never does.

redis-py's `redis/__init__.py` starts with `from redis import asyncio`, which imports the asyncio
client (asyncio, ssl, email: ~40 % of `import redis`, a large share of a worker's start-up before
its first claim). Before the first `import redis` we register `redis.asyncio` as a package whose
`__init__` runs on the first missing-attribute lookup (PEP 562 `__getattr__`): its submodules
stay importable (redis-py's sync code imports a few), `from redis.asyncio import Redis` works
as before. Nothing happens when redis is already imported or its layout is unexpected.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import types


def defer_redis_asyncio() -> bool:
    """True when `redis.asyncio` was registered lazily (redis not imported yet)."""
    if "redis" in sys.modules or "redis.asyncio" in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec("redis")  # a top-level spec: redis itself is not executed
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "asyncio")
    path = os.path.join(folder, "__init__.py")
    if not os.path.isfile(path):
        return False
    module = types.ModuleType("redis.asyncio")
    module.__file__ = path
    module.__path__ = [folder]
    module.__package__ = "redis.asyncio"
    module.__spec__ = importlib.util.spec_from_file_location("redis.asyncio", path, submodule_search_locations=[folder])
    lock = threading.RLock()
    state = {"loaded": False}

    def __getattr__(name: str):
        with lock:
            if not state["loaded"]:
                state["loaded"] = True
                del module.__getattr__
                with open(path, "rb") as fh:
                    code = compile(fh.read(), path, "exec")
                exec(code, module.__dict__)  # noqa: S102 - redis-py's own package code, as import would run it
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'redis.asyncio' has no attribute {name!r}") from None

    module.__getattr__ = __getattr__
    sys.modules["redis.asyncio"] = module
    return True
