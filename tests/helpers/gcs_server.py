"""A private gcp-storage-emulator on a free port: start, stop, restart on the same port.

Data lives on disk in the server's own directory (STORAGE_BASE), so objects and the default
bucket survive a restart; clients find it through `STORAGE_EMULATOR_HOST`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from .net import free_port, wait_for_port, wait_until
from .subprocess_server import SubprocessServer

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / ".venv" / "bin" / "gcp-storage-emulator"


class GCSServer(SubprocessServer):
    """gcp-storage-emulator subprocess; `.host` is the value for STORAGE_EMULATOR_HOST."""

    def __init__(self, port: int | None = None, bucket: str = "test-bucket") -> None:
        self.port = port or free_port()
        self.bucket = bucket
        self.dir = Path(tempfile.mkdtemp(prefix="rc-gcs-"))
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.host, **extra}

    def start(self) -> GCSServer:
        exe = str(EMULATOR) if EMULATOR.exists() else shutil.which("gcp-storage-emulator") or "gcp-storage-emulator"
        env = {**os.environ, "STORAGE_BASE": str(self.dir)}
        env.pop("STORAGE_EMULATOR_HOST", None)
        with open(self.dir / "server.log", "ab") as out:
            self.proc = subprocess.Popen(
                [exe, "start", "--host", "127.0.0.1", "--port", str(self.port), "--default-bucket", self.bucket, "-q"],
                cwd=self.dir, stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        try:
            wait_for_port(self.port, timeout=30)
            wait_until(self._healthy, timeout=30, message="gcs emulator health check")
        except (TimeoutError, AssertionError):
            self.stop()
            raise RuntimeError(f"gcs emulator did not start: {(self.dir / 'server.log').read_text()[-2000:]}") from None
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.host}/storage/v1/b/{self.bucket}", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def remove_files(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
