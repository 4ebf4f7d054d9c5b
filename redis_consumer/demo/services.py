"""The demo's moving parts: a private Redis, the dev model server and worker processes.

Everything started here is stopped by `Services.stop()` (SIGTERM, then SIGKILL after a grace
period), which the demo calls from a `finally`, so Ctrl-C or a failure never leaves a process
behind. Children run in their own session: a terminal's Ctrl-C reaches only the demo, which then
shuts them down in order. Real services are used instead when REDIS_URL, TF_HOST/TF_PORT are set.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..cli.common import CliError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
                  proc: subprocess.Popen | None = None, what: str = "service", log: Path | None = None) -> None:
    """Until something accepts connections on host:port; a `CliError` if `proc` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise CliError(f"{what} exited with code {proc.returncode} while starting; see {log}", 1)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise CliError(f"{what} did not listen on {host}:{port} within {timeout:g}s; see {log}", 1)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    log_file: IO[bytes]


@dataclass
class Services:
    """Starts what the demo needs and remembers it, so `stop()` can end all of it."""

    workdir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    procs: list[Proc] = field(default_factory=list)
    redis_url: str = ""
    tf_host: str = ""
    tf_port: int = 0
    notes: list[str] = field(default_factory=list)
    _fake: Any = None
    _fake_thread: threading.Thread | None = None

    @property
    def log_dir(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - closed in stop(), after the process ends
        popen = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=dict(env or self.environ), start_new_session=True,
                                 preexec_fn=_die_with_parent())  # noqa: PLW1509 - no locks taken in the child
        proc = Proc(name, popen, log_path, log_file)
        self.procs.append(proc)
        return proc

    # -- redis --------------------------------------------------------------------------------
    def start_redis(self) -> str:
        """REDIS_URL if set; else a private redis-server; else an in-process fakeredis TCP server."""
        if self.environ.get("REDIS_URL"):
            self.redis_url = self.environ["REDIS_URL"]
            self.notes.append("Redis: REDIS_URL from the environment")
            return self.redis_url
        server = shutil.which("redis-server")
        port = free_port()
        if server:
            data = self.workdir / "redis"
            data.mkdir(parents=True, exist_ok=True)
            proc = self._spawn("redis-server", [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                                                "--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            wait_for_port(port, proc=proc.popen, what="redis-server", log=proc.log_path)
            self.notes.append(f"Redis: private redis-server on port {port}")
        else:
            self._start_fakeredis(port)
            self.notes.append(f"Redis: in-process fakeredis server on port {port} (redis-server not on PATH)")
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        return self.redis_url

    def _start_fakeredis(self, port: int) -> None:
        try:
            import lupa  # noqa: F401  (the workers' Lua scripts need it)
            from fakeredis import TcpFakeServer
        except ImportError:
            raise CliError("redis-server is not on PATH and fakeredis[lua] is not installed; install one "
                           "(apt-get install redis-server, or pip install 'fakeredis[lua]') or set REDIS_URL") from None
        self._fake = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        self._fake.daemon_threads = True
        self._fake_thread = threading.Thread(target=self._fake.serve_forever, name="fakeredis", daemon=True)
        self._fake_thread.start()
        wait_for_port(port, what="fakeredis server")

    # -- model server -------------------------------------------------------------------------
    def start_model_server(self) -> tuple[str, int]:
        """TF_HOST/TF_PORT if set; else `redis-consumer serve-model` on a free port."""
        if self.environ.get("TF_HOST") or self.environ.get("TF_PORT"):
            self.tf_host = self.environ.get("TF_HOST", "127.0.0.1")
            self.tf_port = int(self.environ.get("TF_PORT", "8500"))
            self.notes.append(f"Model server: TensorFlow Serving at {self.tf_host}:{self.tf_port} from TF_HOST/TF_PORT")
            return self.tf_host, self.tf_port
        port = free_port()
        proc = self._spawn("model-server", [sys.executable, "-m", "redis_consumer.cli.main", "serve-model",
                                            "--host", "127.0.0.1", "--port", str(port)])
        wait_for_port(port, proc=proc.popen, what="the dev model server", log=proc.log_path, timeout=60)
        self.tf_host, self.tf_port = "127.0.0.1", port
        self.notes.append(f"Model server: dev model server (numpy models) on port {port}")
        return self.tf_host, self.tf_port

    # -- workers ------------------------------------------------------------------------------
    def worker_env(self, queue: str, consumer_type: str, bucket: str, name: str) -> dict[str, str]:
        env = dict(self.environ)
        env.update({
            "REDIS_URL": self.redis_url,
            "TF_HOST": self.tf_host,
            "TF_PORT": str(self.tf_port),
            "STORAGE_BUCKET": bucket,
            "QUEUE": queue,
            "CONSUMER_TYPE": consumer_type,
            "HOSTNAME": name,
            "METRICS_PORT": "0",
            "ALLOW_ROOT": "true",  # the demo runs as whoever calls it, containers included
            "EMPTY_QUEUE_TIMEOUT": "1",
            "SHUTDOWN_GRACE": "5",
            "HEARTBEAT_INTERVAL": "1",
            "HEARTBEAT_TTL": "10",
        })
        env.pop("PYTHONWARNINGS", None)
        return env

    def start_worker(self, name: str, queue: str, consumer_type: str, bucket: str) -> Proc:
        return self._spawn(name, [sys.executable, "-m", "redis_consumer.cli.main", "consume"],
                           self.worker_env(queue, consumer_type, bucket, name))

    def check_alive(self) -> None:
        """A `CliError` naming the log when a started process has died."""
        for proc in self.procs:
            code = proc.popen.poll()
            if code is not None:
                tail = _tail(proc.log_path)
                raise CliError(f"{proc.name} exited with code {code}: {tail} (log: {proc.log_path})", 1)

    # -- shutdown -----------------------------------------------------------------------------
    def stop(self, grace: float = 10.0) -> None:
        """Stop every started process, newest first: SIGTERM, wait, then SIGKILL. Never raises."""
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                try:
                    proc.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.popen.kill()
                proc.popen.wait(5)
            proc.log_file.close()
        self.procs.clear()
        if self._fake is not None:
            self._fake.shutdown()
            self._fake.server_close()
            self._fake = None


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook (Linux) that makes the child get SIGTERM if the demo dies without cleaning up.

    libc's `prctl` is resolved here, in the parent, so the child only makes one C call between
    fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)

    return hook


def _tail(path: Path, limit: int = 300) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return " ".join(lines[-1:])[-limit:] if lines else "no output"
