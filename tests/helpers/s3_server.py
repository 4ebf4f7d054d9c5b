"""A private moto S3 server on a free port: start, stop, restart on the same port.

Run as a module, it creates the requested buckets inside the server process before it starts
listening, so a client retrying across a restart never sees a window where the bucket is missing
(moto keeps everything in memory: objects do not survive a restart, buckets are recreated).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .net import free_port, wait_for_port
from .subprocess_server import SubprocessServer

ROOT = Path(__file__).resolve().parents[2]
TEST_KEY_ID = "testing-key-id"
TEST_SECRET = "testing-secret-key"


class S3Server(SubprocessServer):
    """moto_server subprocess; `.endpoint` is its http URL, `.env()` the AWS_* settings for it."""

    def __init__(self, port: int | None = None, buckets: tuple[str, ...] = ("test-bucket",),
                 auth: bool = False) -> None:
        self.port = port or free_port()
        self.buckets = tuple(buckets)
        self.auth = auth  # moto checks credentials (IAM) when true: unknown keys get 403
        self.proc: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="rc-moto-", suffix=".log")[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": TEST_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": TEST_SECRET, "AWS_REGION": "us-east-1", **extra}

    def start(self) -> S3Server:
        cmd = [sys.executable, "-m", "tests.helpers.s3_server", str(self.port), *self.buckets]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         env=self._env())
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"moto server did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        return env

    def remove_files(self) -> None:
        self.log.unlink(missing_ok=True)


def _serve(port: int, buckets: list[str]) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", TEST_KEY_ID)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", TEST_SECRET)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import main

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for name in buckets:
        backend.create_bucket(name, "us-east-1")
    main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2:])
