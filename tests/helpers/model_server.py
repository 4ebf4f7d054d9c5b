"""The dev model server (`redis-consumer serve-model`) as a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class ModelServer:
    """`ModelServer(port=None, max_batch_size=4, fail_rate=0.3, ...)`: options become CLI flags.

    `python` picks another interpreter (e.g. the TensorFlow venv for --model-dir); the repository
    is put on its PYTHONPATH.
    """

    def __init__(self, port: int | None = None, python: str | None = None, **options) -> None:
        self.port = port or free_port()
        self.python = python or sys.executable
        self.options = options
        self.proc: subprocess.Popen | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="rc-model-server-", suffix=".log")
        os.close(fd)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        cmd = [self.python, "-m", "redis_consumer.cli.main", "serve-model", "--host", "127.0.0.1",
               "--port", str(self.port)]
        for key, value in self.options.items():
            if value is None or value is False:
                continue
            cmd.append("--" + key.replace("_", "-"))
            if value is not True:
                cmd.append(str(value))
        return cmd

    def start(self, timeout: float = 60.0) -> ModelServer:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"model server did not start: {self.output()[-3000:]}") from None
        return self

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def stats(self) -> dict:
        from redis_consumer.tfserving.server import fetch_stats

        return fetch_stats(self.address)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
