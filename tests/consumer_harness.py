"""Drive real consumers through the real Redis protocol in-process (claim -> run -> finish).

The same claim path (`Broker.claim_next`) and outcome logic (`JobRunner`) as the worker.
`LocalTF` (from the plug-in kit) runs the dev server's numpy models in-process behind the TF
Serving client interface; the end-to-end tests use the real gRPC dev server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path

from redis_consumer.queue.broker import Broker
from redis_consumer.runner import JobRunner
from redis_consumer.services import Services
from redis_consumer.settings import Settings
from redis_consumer.testing import LocalTF
from redis_consumer.utils.timestamps import now_iso

__all__ = ["Harness", "LocalTF", "bucket_dir", "open_result", "results_json", "settings_for", "submit"]


def settings_for(tmp_path: Path, **kw) -> Settings:
    base = {"QUEUE": "seg", "STORAGE_BUCKET": f"file://{tmp_path}/bucket", "METRICS_PORT": 0,
            "OUTPUT_URL_MODE": "key", "EXPIRE_TIME": 600}
    base.update(kw)
    return Settings.from_env({}, **base)


class Harness:
    """One consumer on one queue with its own broker."""

    def __init__(self, rds, settings: Settings, consumer_cls, tf=None, consumer_id: str = "test-worker") -> None:
        self.rds = rds
        self.settings = settings
        self.queue = settings.QUEUE + consumer_cls.queue_suffix
        self.broker = Broker(rds, self.queue, consumer_id, max_attempts=settings.MAX_ATTEMPTS,
                             expire_time=settings.EXPIRE_TIME, heartbeat_ttl=settings.HEARTBEAT_TTL)
        self.services = Services(settings, tf=tf, cache=rds)
        self.consumer = consumer_cls(settings, self.services)
        self.runner = JobRunner(settings, self.broker, self.consumer, self.services)

    def run_one(self, timeout: float = 1.0) -> str | None:
        claimed = self.broker.claim_next(timeout, self.settings.JOB_TIMEOUT)
        if claimed is None:
            return None
        if claimed.job is None:
            return claimed.outcome
        return self.runner.run(claimed)

    def drain(self, limit: int = 10_000) -> list[str]:
        outcomes = []
        for _ in range(limit):
            outcome = self.run_one(timeout=0.1)
            if outcome is None:
                break
            outcomes.append(outcome)
        return outcomes


def bucket_dir(settings: Settings) -> Path:
    return Path(settings.STORAGE_BUCKET[len("file://"):])


def submit(rds, settings: Settings, local_path: str | None, *, queue: str | None = None, name: str | None = None,
           data: bytes | None = None, **fields) -> str:
    """Upload like the kiosk frontend (uploads/<name>), HSET the job hash, LPUSH the key."""
    queue = queue or settings.QUEUE
    name = name or os.path.basename(local_path)
    dest = bucket_dir(settings) / "uploads" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        dest.write_bytes(data)
    else:
        shutil.copyfile(local_path, dest)
    key = f"{queue}:{name}:{uuid.uuid4().hex}"
    stamp = now_iso()
    rds.hset(key, mapping={"status": "new", "input_file_name": f"uploads/{name}", "original_name": name,
                           "created_at": stamp, "updated_at": stamp, **{k: str(v) for k, v in fields.items()}})
    rds.lpush(queue, key)
    return key


def open_result(settings: Settings, job: dict) -> zipfile.ZipFile:
    path = bucket_dir(settings) / job["output_file_name"]
    return zipfile.ZipFile(io.BytesIO(path.read_bytes()))


def results_json(zf: zipfile.ZipFile, member: str = "results.json") -> dict:
    return json.loads(zf.read(member))
