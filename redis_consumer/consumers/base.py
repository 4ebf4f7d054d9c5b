"""The Consumer base class: what happens to one claimed job, from validation to its final write.

Subclasses implement `_consume(redis_hash)` (the kiosk's name) and use `stage()`, `update_key()`
and `log_job()` while they work. The base class turns the outcome into exactly one fenced final
write: `done` with the returned fields, `failed` with a one-sentence reason (`UserError`), or a
retry/dead-letter for system errors. Claiming, heartbeats and signals live in `worker.py`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import redis

from ..errors import JobTimeout, TransientError, UserError, one_sentence
from ..logs import scrub
from ..middleware import Middleware, MiddlewareChain
from ..queue.broker import Broker, Job
from ..settings import Settings
from ..utils.timestamps import age_seconds, now_iso

log = logging.getLogger(__name__)

#: Statuses a job may have when it is claimed (anything else is a producer bug).
CLAIMABLE_STATUSES = frozenset(
    {"", "new", "started", "downloading", "predicting", "post-processing", "uploading", "waiting"}
)

#: Stage name -> (status shown while it runs, hash field receiving its duration).
STAGES: dict[str, tuple[str, str]] = {
    "download": ("downloading", "download_time"),
    "predict": ("predicting", "predict_time"),
    "postprocess": ("post-processing", "postprocess_time"),
    "upload": ("uploading", "upload_time"),
}

#: Returned by `_consume` when the job was parked (zip parents waiting on children).
PARKED = "__parked__"


class ClaimLost(Exception):
    """Our claim on the job was taken over (we were presumed dead): stop without writing."""


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

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        broker: Broker | None = None,
        storage: Any = None,
        middleware: Middleware | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis_client
        self.queue = settings.QUEUE + self.queue_suffix
        self.broker = broker
        self._storage = storage
        self.middleware = middleware or MiddlewareChain()
        self.job: Job | None = None
        self.job_log: list[str] = []
        self._secrets = settings.secret_values()  # read once: log_job runs for every line of every job
        self._pending_log: list[str] = []
        self._timings: dict[str, float] = {}

    # -- services, created on first use so a worker starts fast ------------------------------
    @property
    def storage(self) -> Any:
        """The bucket client for `STORAGE_BUCKET` (imports only the backend it needs)."""
        if self._storage is None:
            from .. import storage as storage_pkg

            self._storage = storage_pkg.get_client(self.settings.STORAGE_BUCKET, settings=self.settings)
        return self._storage

    # -- helpers for subclasses -------------------------------------------------------------
    @staticmethod
    def get_current_timestamp() -> str:
        """ISO-8601 UTC with microseconds (kiosk helper name)."""
        return now_iso()

    def update_key(self, redis_hash: str, data: Mapping[str, Any]) -> None:
        """Write fields into the job hash, only while our claim holds (kiosk helper name)."""
        job = self._require_job(redis_hash)
        if not self.broker.update(job, data):
            raise ClaimLost(redis_hash)

    def set_progress(self, percent: float) -> None:
        """Report 0-100 progress of the current job."""
        if self.job is not None:
            self.update_key(self.job.key, {"progress": int(max(0, min(100, percent)))})

    def log_job(self, message: str, level: int = logging.INFO) -> None:
        """One line of the job's own story: process log, Redis log list and the result zip."""
        job_key = self.job.key if self.job else "-"
        log.log(level, "%s %s", job_key, message, extra={"job": job_key, "queue": self.queue})
        stamped = f"{now_iso()} {scrub(message, self._secrets)}"  # kept in Redis and zips
        self.job_log.append(stamped)
        self._pending_log.append(stamped)

    def flush_log(self) -> None:
        """Push buffered job-log lines to Redis (done at stage ends and with the final write)."""
        if self._pending_log and self.job is not None and self.broker is not None:
            lines, self._pending_log = self._pending_log, []
            with contextlib.suppress(redis.RedisError):
                self.broker.log(self.job.key, lines)

    def check_deadline(self) -> float:
        """Seconds left for the current job; raises `JobTimeout` when none are."""
        left = self.job.time_left() if self.job else float("inf")
        if left <= 0:
            raise JobTimeout(f"The job did not finish within JOB_TIMEOUT={self.settings.JOB_TIMEOUT:g} seconds.")
        return left

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage: show its status in the hash and record its duration."""
        status, field = STAGES.get(name, (name, f"{name}_time"))
        self.check_deadline()
        if self.job is not None:
            self.update_key(self.job.key, {"status": status})
        self.log_job(f"stage {name} started")
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._timings[name] = self._timings.get(name, 0.0) + elapsed
        self.log_job(f"stage {name} finished in {elapsed:.3f}s")
        if self.job is not None:
            self.update_key(self.job.key, {field: round(self._timings[name], 6)})
            self.flush_log()

    # -- the contract for subclasses --------------------------------------------------------
    def validate(self, redis_hash: str, fields: Mapping[str, str]) -> None:
        """Reject jobs this consumer cannot process (raise `UserError`). Extend in subclasses."""
        missing = [name for name in self.required_fields if not fields.get(name)]
        if missing:
            raise UserError(f"The job is missing the required field {missing[0]!r}; resubmit it with that field set.")

    def _consume(self, redis_hash: str) -> Any:
        """Process one job. Return a mapping of result fields (or None) for `done`.

        Raise `UserError` for bad input; anything else is retried as a system error.
        """
        raise NotImplementedError

    def park(self, children_total: int, fields: Mapping[str, Any] | None = None) -> str:
        """Wait for `children_total` child jobs (zip fan-out); return the result from `_consume`."""
        if not self.broker.park(self._require_job(None), children_total, fields):
            raise ClaimLost(self.job.key)
        return PARKED

    # -- one job, start to end --------------------------------------------------------------
    def process(self, job: Job) -> str:
        """Run a claimed job to one fenced outcome: done, failed, requeued, dead, parked, lost."""
        self.job, self.job_log, self._pending_log, self._timings = job, [], [], {}
        started = time.perf_counter()
        self.middleware.job_claimed(self.queue, job.key, _wait_seconds(job.fields))
        self.log_job(f"claimed by {self.broker.consumer_id} (attempt {job.attempts})")
        try:
            return self._run(job, started)
        finally:
            self.job = None

    def _run(self, job: Job, started: float) -> str:
        try:
            result = self._call_consume(job)
        except ClaimLost:
            log.warning("%s claim lost to another worker; dropping our copy", job.key)
            return "lost"
        except UserError as exc:
            reason = one_sentence(scrub(str(exc), self._secrets))
            return self._end(job, "failed", {"reason": reason, "failure_type": "user"}, started)
        except TransientError as exc:
            reason = one_sentence(scrub(str(exc), self._secrets))
            self.log_job(f"system error: {reason}", logging.WARNING)
            self.flush_log()
            outcome = self.broker.retry(job, _final_reason(reason, job.attempts))
            self.middleware.job_requeued(self.queue, job.key, outcome)
            if outcome == "dead":
                self.middleware.job_finished(self.queue, job.key, "failed", "system", self._timing_fields(started))
            return outcome
        if result == PARKED:
            self.log_job("waiting for child jobs")
            self.flush_log()
            return "parked"
        extra = dict(result) if isinstance(result, Mapping) else {}
        status = extra.pop("status", "done") if isinstance(result, Mapping) else (result or "done")
        return self._end(job, status, extra, started)

    def _call_consume(self, job: Job) -> Any:
        """Validate and consume; unknown exceptions become system errors (Redis errors pass up)."""
        try:
            if job.previous_status not in CLAIMABLE_STATUSES:
                raise UserError(
                    f"The job's status {job.previous_status!r} is not one a producer may set; "
                    "submit jobs with status 'new'."
                )
            self.validate(job.key, job.fields)
            return self._consume(job.key)
        except (UserError, ClaimLost, TransientError, redis.RedisError):
            raise
        except Exception as exc:
            log.exception("%s unexpected error", job.key)
            # the exception's text stays in the worker log: library messages can hold URLs,
            # credentials or several lines, none of which belongs in a user-facing reason
            raise TransientError(f"the worker hit an internal error ({type(exc).__name__})") from exc

    def _timing_fields(self, started: float) -> dict[str, float]:
        timings = {name: round(t, 6) for name, t in self._timings.items()}
        timings["total"] = round(time.perf_counter() - started, 6)
        return timings

    def _end(self, job: Job, status: str, extra: Mapping[str, Any], started: float) -> str:
        timings = self._timing_fields(started)
        fields = {"total_time": timings["total"], **extra}
        if status == "failed":
            fields.setdefault("failure_type", "user")
        self.log_job(f"{status} in {timings['total']:.3f}s" + (f": {extra['reason']}" if "reason" in extra else ""))
        pending, self._pending_log = self._pending_log, []
        result = self.broker.finish(job, status, fields, log_lines=pending)
        if result == 0:
            log.warning("%s finished, but a newer claim owns it; result discarded", job.key)
            return "lost"
        self.middleware.job_finished(self.queue, job.key, status, fields.get("failure_type"), timings)
        return status

    def _require_job(self, redis_hash: str | None) -> Job:
        if self.job is None or (redis_hash is not None and redis_hash != self.job.key):
            raise RuntimeError("update_key() is only for the job this consumer is processing")
        return self.job


def _wait_seconds(fields: Mapping[str, str]) -> float | None:
    return age_seconds(fields.get("created_at"))


def _final_reason(reason: str, attempts: int) -> str:
    text = reason.rstrip(".")
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return f"The job failed after {tries} because of a system error ({text}); resubmit it once the service recovers."
