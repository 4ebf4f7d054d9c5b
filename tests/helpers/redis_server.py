"""A private `redis-server` on a free port: start, kill, restart (AOF keeps data), Sentinel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from .net import free_port, wait_for_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class RedisServer:
    """One redis-server process with its own directory; `appendonly` keeps data across restarts."""

    def __init__(self, port: int | None = None, appendonly: bool = True, extra: list[str] | None = None,
                 workdir: str | None = None) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra = list(extra or [])
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="rc-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        return [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--daemonize", "no", "--protected-mode", "no", "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        wait_until(self._ready, message=f"redis on {self.port} to load")
        return self

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text()[-2000:]}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self, **kw) -> redis.Redis:
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 5)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Sentinel:
    """A `redis-server --sentinel` watching one master, with a fast failover timeout."""

    def __init__(self, master_port: int, name: str = "mymaster", port: int | None = None) -> None:
        self.port = port or free_port()
        self.name = name
        self.master_port = master_port
        self.dir = Path(tempfile.mkdtemp(prefix="rc-sentinel-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> Sentinel:
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nprotected-mode no\n"
            f"sentinel monitor {self.name} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {self.name} 1000\n"
            f"sentinel failover-timeout {self.name} 3000\n"
            f"sentinel parallel-syncs {self.name} 1\n"
        )
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def master_port_now(self) -> int:
        c = redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True)
        _host, port = c.execute_command("SENTINEL", "get-master-addr-by-name", self.name)
        return int(port)

    def cleanup(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def env_for(server: RedisServer, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess pointed at `server`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "QUEUE", "CONSUMER_TYPE"))}
    env.update({"REDIS_URL": server.url, "METRICS_PORT": "0", "ALLOW_ROOT": "true", **extra})
    return env
