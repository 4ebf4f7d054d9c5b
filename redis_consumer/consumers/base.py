"""The Consumer base class: what a job type does with one claimed job, nothing more.

A consumer implements `consume(job)` and returns the result fields (a mapping, or None); it
raises `UserError` with one sentence for bad input. The worker decides everything else (done,
failed, retried, dead-lettered, parked, lost; see `redis_consumer/runner.py`). The consumer
sees a `Job` (fields, deadline, stage, progress, log, update) and its `services` (storage, TF
Serving), never a Redis client.

Kiosk-style subclasses keep working through a thin compatibility layer: `_consume(redis_hash)`
with `self.job.fields`, `update_key()`, `get_current_timestamp()`, `log_job()`, `stage()`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from ..errors import ClaimLost, UserError
from ..job import STAGES, Job
from ..queue.status import CLAIMABLE
from ..services import Services
from ..settings import Settings
from ..utils.timestamps import now_iso

__all__ = ["CLAIMABLE_STATUSES", "STAGES", "ClaimLost", "Consumer", "Job"]

#: Statuses a job may have when it is claimed (anything else is a producer bug).
CLAIMABLE_STATUSES = CLAIMABLE


class Consumer:
    """Base of every consumer type. One instance serves one queue in one worker process."""

    #: Registry name, for logs and metrics.
    name = "base"
    #: Suffix appended to `QUEUE` (the zip consumer reads `{QUEUE}-zip`).
    queue_suffix = ""
    #: Hash fields a job must carry; a missing one fails the job as a user error.
    required_fields: tuple[str, ...] = ()
    #: Whether jobs need TensorFlow Serving (then /readyz also checks that it is reachable).
    uses_tfserving = False

    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.settings = settings
        self.queue = settings.QUEUE + self.queue_suffix
        self.services = services if services is not None else Services(settings)
        #: The job being processed (set by the worker for the length of one job).
        self.job: Job | None = None

    @property
    def storage(self) -> Any:
        """The bucket client for `STORAGE_BUCKET` (`self.services.storage`)."""
        return self.services.storage

    @storage.setter
    def storage(self, client: Any) -> None:
        self.services.storage = client

    #: Modules the first job imports lazily: `warm_up` imports them before the first claim.
    warm_modules: tuple[str, ...] = ()

    # -- the contract -----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Prepare what the first job needs (imports, clients, channels) before the first claim.

        The worker calls it once, in a thread, bounded in time, after its first heartbeat; an
        exception is logged and ignored (the first job then pays for whatever was not warmed).
        Extend in subclasses; the default imports `warm_modules`.
        """
        import importlib

        for name in self.warm_modules:
            importlib.import_module(name)

    def validate(self, redis_hash: str, fields: Mapping[str, str]) -> None:
        """Reject jobs this consumer cannot process (raise `UserError`). Extend in subclasses."""
        missing = [name for name in self.required_fields if not fields.get(name)]
        if missing:
            raise UserError(f"The job is missing the required field {missing[0]!r}; resubmit it with that field set.")

    def consume(self, job: Job) -> Mapping[str, Any] | None:
        """Process one job; return the result fields written with `status=done` (or None).

        Raise `UserError` (one sentence) for bad input; anything else is retried as a system error.
        The default calls the kiosk-style `_consume(job.key)`.
        """
        return self._consume(job.key)

    def _consume(self, redis_hash: str) -> Any:
        """Kiosk-style entry point (override `consume(job)` instead in new code)."""
        raise NotImplementedError(f"{type(self).__name__} must implement consume(job)")

    # -- kiosk-style helpers (thin wrappers over self.job) -----------------------------------
    @staticmethod
    def get_current_timestamp() -> str:
        """ISO-8601 UTC with microseconds (kiosk helper name)."""
        return now_iso()

    def update_key(self, redis_hash: str, data: Mapping[str, Any]) -> None:
        """Write fields into the job hash, only while our claim holds (kiosk helper name)."""
        self._require_job(redis_hash).update(data)

    def set_progress(self, percent: float) -> None:
        """Report 0-100 progress of the current job."""
        if self.job is not None:
            self.job.progress(percent)

    def log_job(self, message: str, level: int = logging.INFO) -> None:
        """One line of the job's own story (`self.job.log`)."""
        if self.job is not None:
            self.job.log(message, level)
        else:
            logging.getLogger(__name__).log(level, "- %s", message)

    def flush_log(self) -> None:
        """Push buffered job-log lines to Redis now."""
        if self.job is not None:
            self.job.flush()

    @property
    def job_log(self) -> list[str]:
        """This run's log lines (what the result zip's log.txt holds)."""
        return self.job.lines if self.job is not None else []

    def check_deadline(self) -> float:
        """Seconds left for the current job; raises `JobTimeout` when none are."""
        return self.job.check_deadline() if self.job is not None else float("inf")

    def stage(self, name: str) -> AbstractContextManager[None]:
        """`self.job.stage(name)`: status and duration of one stage in the hash."""
        return self._require_job(None).stage(name)

    def park(self, children_total: int, fields: Mapping[str, Any] | None = None) -> None:
        """Wait for `children_total` child jobs (zip fan-out); `self.job.park`."""
        self._require_job(None).park(children_total, fields)

    def _require_job(self, redis_hash: str | None) -> Job:
        if self.job is None or (redis_hash is not None and redis_hash != self.job.key):
            raise RuntimeError("update_key() is only for the job this consumer is processing")
        return self.job
