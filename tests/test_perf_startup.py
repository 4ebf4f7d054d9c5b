"""Start-up cost cuts: the numpy triangular window and the deferred `redis.asyncio` behave as before."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.signal import windows

from redis_consumer.deepcell.tiling import _triang

ROOT = Path(__file__).resolve().parents[1]


def test_triang_equals_scipy_for_every_size():
    for size in range(520):
        assert np.array_equal(_triang(size), windows.triang(size)), size


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return out.stdout.strip()


def test_worker_import_skips_redis_asyncio_client_and_scipy_signal():
    code = ("import sys, redis_consumer.worker, redis_consumer.consumers.segmentation, redis_consumer.deepcell.tiling\n"
            "print('redis.asyncio.client' in sys.modules, 'scipy.signal' in sys.modules)")
    assert _run(code) == "False False"


def test_deferred_redis_asyncio_still_works():
    code = ("import redis_consumer, redis, sys\n"
            "from redis.asyncio import Redis, StrictRedis\n"
            "import redis.asyncio.client as c\n"
            "assert Redis is c.Redis and redis.asyncio.Redis is Redis\n"
            "try:\n    redis.asyncio.no_such_name\nexcept AttributeError:\n    print('ok')\n")
    assert _run(code) == "ok"
