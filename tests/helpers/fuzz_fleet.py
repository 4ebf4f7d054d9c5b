"""A small real fleet for fuzzing: image + zip worker processes, a `file://` bucket, the dev model server.

`Fleet.run_batch(specs)` uploads and submits a batch of `JobSpec`s, waits until each is final (or
dead-lettered) while watching the workers, then checks the properties of issue 15 and returns the
`Failure`s found (empty when all hold):

- every worker process is alive and its heartbeat in `consumers:{queue}` is fresh;
- every job (and every child a zip fanned out) is `done`/`failed` or on `dead-{queue}`;
- every `failed` has a one-sentence `reason`: no newline, <= 500 chars, no traceback text, no secret;
- a known-good image job and a known-good zip job submitted after the batch end `done`.

After any failure the fleet is restarted on a flushed Redis, so the next batch starts clean.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from redis_consumer.utils.timestamps import now_iso
from tests.helpers.chaos_procs import WorkerProcess, worker_env
from tests.helpers.fuzz_jobs import JobSpec
from tests.helpers.model_server import ModelServer

QUEUE = "fuzz"
ZIP_QUEUE = QUEUE + "-zip"
FINAL = (b"done", b"failed")
REASON_MAX = 500
RSS_LIMIT = 1536 * 1024 * 1024
#: Planted in the workers' environment: must never show up in a reason or a log line.
SECRET = "fuzz-secret-6f1d2c"
_TRACE = re.compile(r"Traceback|File \"|line \d+, in |\bat 0x[0-9a-f]+")


@dataclass
class Failure:
    kind: str  # worker-died, hang, stuck, bad-reason, good-job, memory, secret
    detail: str
    jobs: list[dict] = field(default_factory=list)  # JobSpec.describe() of the suspects
    log_tail: str = ""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "detail": self.detail, "jobs": self.jobs, "log_tail": self.log_tail}


def good_tiff(seed: int = 0) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8))
    return buf.getvalue()


def reason_problem(reason: str) -> str | None:
    """Why `reason` is not one user-facing sentence (None when it is)."""
    if not reason.strip():
        return "empty reason"
    if "\n" in reason or "\r" in reason:
        return "reason has a line break"
    if len(reason) > REASON_MAX:
        return f"reason is {len(reason)} chars (> {REASON_MAX})"
    if _TRACE.search(reason):
        return "reason has traceback text"
    if SECRET in reason:
        return "reason leaks a secret"
    return None


class Fleet:
    """One image worker and one zip worker against `redis_url`; files under `base`."""

    def __init__(self, redis_url: str, base: str | os.PathLike | None = None, job_timeout: float = 10.0) -> None:
        self.redis_url = redis_url
        self.base = Path(base or tempfile.mkdtemp(prefix="rc-fuzz-"))
        self.bucket = self.base / "bucket"
        (self.bucket / "uploads").mkdir(parents=True, exist_ok=True)
        (self.bucket / "uploads" / "good.tif").write_bytes(good_tiff())
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.tif", good_tiff(1))
            zf.writestr("b.tif", good_tiff(2))
        (self.bucket / "uploads" / "good.zip").write_bytes(buf.getvalue())
        self.job_timeout = job_timeout
        self.client = redis.Redis.from_url(redis_url)  # bytes: fields may not be UTF-8
        self.model: ModelServer | None = None
        self.workers: dict[str, WorkerProcess] = {}
        self.restarts = 0
        self.cases = 0

    # -- processes ---------------------------------------------------------------------------
    def _env(self, consumer: str) -> dict[str, str]:
        assert self.model is not None
        return worker_env(
            CONSUMER_TYPE=consumer, REDIS_URL=self.redis_url, QUEUE=QUEUE, STORAGE_BUCKET=f"file://{self.bucket}",
            OUTPUT_URL_MODE="key", TF_HOST="127.0.0.1", TF_PORT=str(self.model.port), MAX_ATTEMPTS="2",
            RETRY_BACKOFF_CAP="0.2", MAX_RETRY="1", GRPC_BACKOFF="0.1", JOB_TIMEOUT=str(self.job_timeout),
            LOG_LEVEL="INFO", MAX_ZIP_ENTRIES="200", AWS_SECRET_ACCESS_KEY=SECRET, REDIS_CONSUMER_FUZZ_SECRET=SECRET,
        )

    def start(self) -> Fleet:
        if self.model is None:
            self.model = ModelServer().start()
        logs = self.base / f"logs-{self.restarts}"
        logs.mkdir(exist_ok=True)
        self.workers = {
            "image": WorkerProcess(self._env("segmentation"), log_dir=str(logs), name="image-worker").start(),
            "zip": WorkerProcess(self._env("zip"), log_dir=str(logs), name="zip-worker").start(),
        }
        self._wait_registered()
        return self

    def _wait_registered(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.client.zcard(f"consumers:{q}") for q in (QUEUE, ZIP_QUEUE)):
                return
            if not all(w.alive() for w in self.workers.values()):
                break
            time.sleep(0.1)
        raise RuntimeError("workers did not register: " + self.log_tail())

    def stop(self) -> None:
        for w in self.workers.values():
            w.kill()
        self.workers = {}

    def close(self) -> None:
        for w in self.workers.values():
            w.terminate(15)
        self.workers = {}
        if self.model:
            self.model.stop()
            self.model = None
        self.client.close()

    def restart(self) -> None:
        self.stop()
        self.client.flushall()
        self.restarts += 1
        self.start()

    def log_tail(self, chars: int = 2500) -> str:
        out = []
        for name, w in self.workers.items():
            text = w.output()
            idx = text.rfind("Traceback")
            tail = text[max(0, idx - 300):][:chars] if idx >= 0 else text[-chars // 2:]
            out.append(f"--- {name} (alive={w.alive()}) ---\n{tail}")
        return "\n".join(out)

    # -- health ------------------------------------------------------------------------------
    def health(self) -> tuple[str, str] | None:
        """(kind, detail) when a worker died, hangs (stale heartbeat) or ballooned; None when fine."""
        for name, w in self.workers.items():
            if not w.alive():
                return "worker-died", f"{name} exited with {w.proc.returncode}"
            peak = _peak_rss(w.pid)
            if peak > RSS_LIMIT:
                return "memory", f"{name} peak RSS {peak >> 20} MiB > {RSS_LIMIT >> 20} MiB"
        now = time.time()
        for q in (QUEUE, ZIP_QUEUE):
            scores = [s for _, s in self.client.zrange(f"consumers:{q}", 0, -1, withscores=True)]
            if not any(s > now for s in scores):
                # a crashing worker deregisters before it exits: tell a death from a hang
                for _ in range(30):
                    dead = [(n, w) for n, w in self.workers.items() if not w.alive()]
                    if dead:
                        return "worker-died", f"{dead[0][0]} exited with {dead[0][1].proc.returncode}"
                    time.sleep(0.1)
                return "hang", f"no fresh heartbeat on consumers:{q} (expiries {scores}, now {now:.0f})"
        return None

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> bytes:
        queue = ZIP_QUEUE if spec.queue_kind == "zip" else QUEUE
        if spec.upload:
            path = self.bucket / spec.upload[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(spec.upload[1])
        key = f"{queue}:fuzz{self.cases}:{uuid.uuid4().hex[:12]}".encode()
        self.cases += 1
        fields = spec.fields or {b"status": b"new"}  # HSET needs at least one field
        self.client.hset(key, mapping=fields)
        self.client.lpush(queue, key)
        return key

    def _dead(self) -> set[bytes]:
        return set(self.client.lrange(f"dead-{QUEUE}", 0, -1)) | set(self.client.lrange(f"dead-{ZIP_QUEUE}", 0, -1))

    def _pending(self, keys: list[bytes]) -> list[bytes]:
        dead = self._dead()
        out = []
        for key in keys:
            if key in dead:
                continue
            status = self.client.hget(key, "status") if self.client.type(key) == b"hash" else b"gone"
            if status not in FINAL and status != b"gone":
                out.append(key)
        return out

    def _children(self, key: bytes) -> list[bytes]:
        return list(self.client.lrange(b"children:" + key, 0, -1))

    def wait(self, keys: list[bytes], stall: float) -> tuple[list[bytes], tuple[str, str] | None]:
        """Wait until `keys` (and their zip children) are final or dead; (still pending, health problem).

        Gives up when no job became final for `stall` seconds (a zip may fan out hundreds of
        children, so a total timeout would either be huge or flaky).
        """
        deadline = time.monotonic() + stall
        best = None
        while True:
            everything = keys + [c for k in keys for c in self._children(k)]
            pending = self._pending(everything)
            if best is None or len(pending) < best:
                best, deadline = len(pending), time.monotonic() + stall
            problem = self.health()
            if not pending or problem or time.monotonic() > deadline:
                return pending, problem
            time.sleep(0.1)

    def run_batch(self, specs: list[JobSpec], timeout: float | None = None) -> list[Failure]:
        """Submit `specs`, wait and check; restart the fleet after any failure."""
        keyed = [(self.submit(s), s) for s in specs]
        keys = [k for k, _ in keyed]
        by_key = {k: s for k, s in keyed}
        timeout = timeout or self.job_timeout * 2 + 2
        pending, problem = self.wait(keys, timeout)
        failures: list[Failure] = []
        if problem:
            suspects = pending or keys
            failures.append(Failure(problem[0], problem[1], [by_key[k].describe() for k in suspects if k in by_key],
                                    self.log_tail()))
        elif pending:
            failures.append(Failure("stuck", f"{len(pending)} job(s) not final, none ended in {timeout:.0f}s: "
                                    + ", ".join(k.decode() for k in pending[:5]),
                                    [by_key[k].describe() for k in pending if k in by_key], self.log_tail()))
        failures += self._check_reasons(keyed)
        if not failures:
            failures += self._check_good_jobs()
        if not failures:
            failures += self._check_logs()
        if failures:
            self.restart()
        return failures

    def _check_reasons(self, keyed: list[tuple[bytes, JobSpec]]) -> list[Failure]:
        out = []
        for key, spec in keyed:
            for k in [key, *self._children(key)]:
                data = self.client.hgetall(k) if self.client.type(k) == b"hash" else {}
                if data.get(b"status") != b"failed":
                    continue
                if k == key and spec.fields.get(b"status") == b"failed" and data.get(b"reason") == spec.fields.get(b"reason"):
                    continue  # the producer wrote it failed already and the worker left it alone
                raw = data.get(b"reason", b"")
                try:
                    reason = raw.decode("utf-8")
                except UnicodeDecodeError:
                    out.append(Failure("bad-reason", f"{k!r}: reason is not UTF-8: {raw[:200]!r}", [spec.describe()]))
                    continue
                problem = reason_problem(reason)
                if problem:
                    out.append(Failure("bad-reason", f"{k.decode(errors='replace')}: {problem}: {reason[:600]!r}",
                                       [spec.describe()]))
        return out

    def _check_good_jobs(self) -> list[Failure]:
        now = now_iso()
        keys = []
        for queue, name in ((QUEUE, "uploads/good.tif"), (ZIP_QUEUE, "uploads/good.zip")):
            key = f"{queue}:good:{uuid.uuid4().hex[:12]}".encode()
            self.client.hset(key, mapping={"status": "new", "input_file_name": name, "original_name": name[8:],
                                           "model_name": "NuclearSegmentation", "model_version": "1",
                                           "created_at": now, "updated_at": now})
            self.client.lpush(queue, key)
            keys.append(key)
        _, problem = self.wait(keys, self.job_timeout * 3)
        out = []
        for key in keys:
            data = self.client.hgetall(key)
            if data.get(b"status") != b"done":
                detail = problem[1] if problem else f"status {data.get(b'status')!r} reason {data.get(b'reason')!r}"
                out.append(Failure("good-job", f"known-good {key.decode()} did not finish done: {detail}",
                                   log_tail=self.log_tail()))
        return out

    def _check_logs(self) -> list[Failure]:
        out = []
        for name, w in self.workers.items():
            text = w.output()
            if SECRET in text:
                out.append(Failure("secret", f"{name}'s log contains the planted secret", log_tail=self.log_tail()))
            if "Traceback" in text:
                out.append(Failure("traceback", f"{name}'s log has a traceback", log_tail=self.log_tail()))
        return out


def _peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in bytes; 0 when unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cleanup(fleet: Fleet) -> None:
    fleet.close()
    shutil.rmtree(fleet.base, ignore_errors=True)
