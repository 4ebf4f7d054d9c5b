"""A kit for consumer plug-in authors: run your consumer on one job, in-process, and look at the result.

    from redis_consumer.testing import run_job

    run = run_job(MyConsumer, {"top_k": "2"}, inputs={"sky.png": png_bytes}, model_server=True)
    assert run.status == "done", run.hash.get("reason")
    run.hash["top_label"], run.files["results.json"], run.log

The job goes through the real protocol (enqueue, claim, the worker's outcome logic, the fenced
final write) on fakeredis by default or a real Redis (`redis_url=`), with a temporary `file://`
bucket holding `inputs` under `uploads/`. TF Serving is the dev model server started for the
call (`model_server=True`), one already running (`model_server="host:port"`), or any stand-in
object (`tf=`, e.g. `LocalTF()`). JOB_TIMEOUT is enforced only where the consumer calls
`job.check_deadline()` (there is no supervisor thread here).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .queue.broker import Broker
from .runner import JobRunner
from .services import Services
from .settings import Settings
from .utils.timestamps import now_iso

__all__ = ["JobRun", "LocalTF", "ModelServer", "run_job"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class JobRun:
    """What became of the job: the outcome, the final hash, the result zip's files and the job log."""

    key: str
    outcome: str
    hash: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.hash.get("status", "")


def run_job(
    consumer_cls: type,
    fields: Mapping[str, Any] | None = None,
    *,
    inputs: Mapping[str, bytes | str | os.PathLike] | None = None,
    settings: Mapping[str, Any] | None = None,
    redis_url: str | None = None,
    model_server: bool | str = False,
    tf: Any = None,
    queue: str | None = None,
) -> JobRun:
    """Run `consumer_cls` on one job built from `fields` and return what it produced.

    `inputs` maps file names to bytes (or a local path) uploaded to `uploads/<name>`; with one
    input and no `input_file_name` in `fields`, the job points at it. `settings` are overrides
    (names as in `redis-consumer config`).
    """
    bucket = Path(tempfile.mkdtemp(prefix="rc-testing-"))
    server = ModelServer().start() if model_server is True else None
    try:
        address = server.address if server else (model_server if isinstance(model_server, str) else "")
        tf_host, _, tf_port = address.partition(":")
        overrides: dict[str, Any] = {"QUEUE": queue or getattr(consumer_cls, "name", "testing"),
                                     "STORAGE_BUCKET": f"file://{bucket}", "OUTPUT_URL_MODE": "key",
                                     "METRICS_PORT": 0}
        if tf_host:
            overrides.update(TF_HOST=tf_host, TF_PORT=int(tf_port))
        overrides.update(settings or {})
        cfg = Settings.from_env({}, **overrides)
        job_fields = {"status": "new", "created_at": now_iso(), **{k: str(v) for k, v in (fields or {}).items()}}
        for name, data in (inputs or {}).items():
            dest = bucket / "uploads" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                dest.write_bytes(data)
            else:
                shutil.copyfile(data, dest)
        if inputs and len(inputs) == 1 and "input_file_name" not in job_fields:
            name = next(iter(inputs))
            job_fields.update(input_file_name=f"uploads/{name}", original_name=job_fields.get("original_name", name))
        client = _client(redis_url)
        q = cfg.QUEUE + getattr(consumer_cls, "queue_suffix", "")
        broker = Broker(client, q, f"testing-{uuid.uuid4().hex[:6]}", max_attempts=cfg.MAX_ATTEMPTS,
                        expire_time=cfg.EXPIRE_TIME, heartbeat_ttl=cfg.HEARTBEAT_TTL, log_lines=cfg.JOB_LOG_LINES)
        key = f"{q}:{job_fields.get('original_name', 'job')}:{uuid.uuid4().hex}"
        broker.enqueue(key, job_fields)
        services = Services(cfg, tf=tf, cache=client)
        runner = JobRunner(cfg, broker, consumer_cls(cfg, services), services)
        claimed = broker.claim_next(1.0, cfg.JOB_TIMEOUT)
        if claimed is None:
            raise RuntimeError(f"the job {key} could not be claimed from {q!r}")
        outcome = runner.run(claimed)
        final = client.hgetall(key)
        return JobRun(key=key, outcome=str(outcome), hash=final, files=_result_files(bucket, final),
                      log=broker.read_log(key))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(bucket, ignore_errors=True)


def _client(redis_url: str | None) -> Any:
    if redis_url:
        import redis

        return redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        import fakeredis
    except ImportError:  # pragma: no cover - the dev extra installs it
        raise RuntimeError("run_job needs fakeredis and lupa (pip install 'redis-consumer[dev]') "
                           "or a real Redis: pass redis_url=") from None
    return fakeredis.FakeRedis(decode_responses=True)


def _result_files(bucket: Path, final: Mapping[str, str]) -> dict[str, bytes]:
    name = final.get("output_file_name")
    path = bucket / name if name else None
    if path is None or not path.is_file():
        return {}
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}
    except zipfile.BadZipFile:
        return {os.path.basename(name): data}


# -- model stand-ins ---------------------------------------------------------------------------
class LocalTF:
    """In-process stand-in for the TF Serving client: the dev server's numpy models, no gRPC."""

    def __init__(self) -> None:
        from .tfserving.catalog import builtin_models

        self.models = {(m.name, str(m.version)): m for m in builtin_models()}
        self.calls = 0

    def _model(self, model: str, version: Any) -> Any:
        from .errors import UserError

        found = self.models.get((model, str(version or "1")))
        if found is None:
            raise UserError(f"Model {model}:{version} is not served: Servable not found.")
        return found

    def get_metadata(self, model: str, version: Any = None, **_: Any) -> Any:
        return self._model(model, version).metadata()

    def predict(self, model: str, version: Any, inputs: Any, *, deadline: float | None = None) -> Any:
        import numpy as np

        self.calls += 1
        m = self._model(model, version)
        meta = m.metadata()
        feed = inputs if isinstance(inputs, dict) else {next(iter(meta.inputs)): inputs}
        feed = {k: np.asarray(v, dtype=np.float32) for k, v in feed.items()}
        out = m.predict(feed)
        return out if isinstance(inputs, dict) or len(out) != 1 else next(iter(out.values()))

    def predict_stream(self, model: str, version: Any, total: int, source: Any, sink: Any, *,
                       deadline: float | None = None, output_filter: Any = ()) -> None:
        """Same contract as TFServingClient.predict_stream, one batch of 8 at a time."""
        for lo in range(0, total, 8):
            hi = min(total, lo + 8)
            out = self.predict(model, version, source(lo, hi), deadline=deadline)
            sink(lo, hi, {k: v for k, v in out.items() if k in output_filter} if output_filter else out)

    def batch_size(self, model: str) -> int:
        return 32

    def ready(self, timeout: float = 1.0) -> bool:
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def _remove_file(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class ModelServer:
    """The dev model server (`redis-consumer serve-model`) as a subprocess on a free port.

    `ModelServer(port=None, python=None, max_batch_size=4, fail_rate=0.3, ...)`: options become
    CLI flags; `python` picks another interpreter (e.g. a TensorFlow venv for --model-dir).
    """

    def __init__(self, port: int | None = None, python: str | None = None, **options: Any) -> None:
        self.port = port or free_port()
        self.python = python or sys.executable
        self.options = options
        self.proc: subprocess.Popen | None = None
        fd, self.log_path = tempfile.mkstemp(prefix="rc-model-server-", suffix=".log")
        os.close(fd)
        # the log is read while the object lives (also after stop()); removed with it, or at exit
        weakref.finalize(self, _remove_file, self.log_path)

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
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=_PACKAGE_ROOT)
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
        from .tfserving.server import fetch_stats

        return fetch_stats(self.address)

    def __enter__(self) -> ModelServer:  # noqa: PYI034 - start() returns the server
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
