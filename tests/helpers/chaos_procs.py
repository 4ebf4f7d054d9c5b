"""Worker subprocesses and job submission for integration tests, chaos runs and benchmarks.

A worker is the real `redis-consumer consume` entry point in its own process, so signals, exit
codes and log output are exactly what a pod would show. Output goes to a file (never a pipe that
could fill up and block the worker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

import redis

from redis_consumer.utils.timestamps import now_iso as utc_now

ROOT = Path(__file__).resolve().parents[2]

#: Fast liveness so recoveries happen in seconds, not the production 30 s.
FAST_ENV = {
    "EMPTY_QUEUE_TIMEOUT": "0.5",
    "HEARTBEAT_INTERVAL": "0.5",
    "HEARTBEAT_TTL": "3",
    "SHUTDOWN_GRACE": "5",
    "METRICS_PORT": "0",
    "LOG_FORMAT": "json",
    "ALLOW_ROOT": "true",  # test machines and CI run as root inside a container
}


def worker_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The test process's environment without Redis/queue/container settings, plus `extra`."""
    drop = ("REDIS_", "QUEUE", "CONSUMER_TYPE", "KUBERNETES_SERVICE_HOST", "REDIS_CONSUMER_IN_CONTAINER")
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith(drop)}
    env.update(FAST_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


class WorkerProcess:
    """`python -m redis_consumer.cli.main consume` with its output captured to a file."""

    def __init__(self, env: Mapping[str, str], log_dir: str | None = None, name: str | None = None) -> None:
        self.env = dict(env)
        self.name = name or f"worker-{uuid.uuid4().hex[:6]}"
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="rc-worker-")) / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.env.setdefault("HOSTNAME", self.name)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redis_consumer.cli.main", "consume"],
                env=self.env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; returns the exit code (SIGKILL after `timeout`)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def wait(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def submit(client: redis.Redis, queue: str, key: str | None = None, **fields: str) -> str:
    """Write a kiosk-shaped job hash (HSET then LPUSH, like the kiosk frontend) and return its key."""
    key = key or f"{queue}:test.tif:{uuid.uuid4().hex}"
    now = utc_now()
    data = {"status": "new", "input_file_name": "test.tif", "original_name": "test.tif", "model_name": "",
            "model_version": "", "created_at": now, "updated_at": now}
    data.update(fields)
    client.hset(key, mapping=data)
    client.lpush(queue, key)
    return key
