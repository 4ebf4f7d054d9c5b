"""`Job`: everything a consumer sees of one claimed job (never the Redis client behind it).

Fields, attempts and deadline come from the claim; `stage()`, `progress()`, `log()` and
`update()` write back through the broker's fenced steps, so a worker that lost its claim (or
whose job vanished) writes nothing more: `update()` raises `ClaimLost` and the worker drops the
job. Storage and the TF Serving client are in `job.services`.

Stage statuses and progress are coalesced: each one waits up to `status_interval` seconds
(STATUS_MIN_INTERVAL) and changes within that window share one write, made by the next write
of the job (an update, a flush, the final write) or, once due, by the worker's supervisor thread
(`write_due`). A short job thus makes no status write besides its claim and its final write, a
long stage still shows in the hash within the interval, and the kiosk page polling every 3 s
sees the same statuses.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis

from .errors import ClaimLost, JobTimeout
from .logs import scrub
from .queue.broker import Broker, Claim
from .queue.status import Status
from .services import Services
from .utils.timestamps import now_iso

log = logging.getLogger("redis_consumer.consumers.base")

#: Stage name -> (status shown while it runs, hash field receiving its duration).
STAGES: dict[str, tuple[Status, str]] = {
    "download": (Status.DOWNLOADING, "download_time"),
    "preprocess": (Status.PRE_PROCESSING, "preprocess_time"),
    "predict": (Status.PREDICTING, "predict_time"),
    "postprocess": (Status.POST_PROCESSING, "postprocess_time"),
    "save": (Status.SAVING_RESULTS, "save_time"),
    "upload": (Status.UPLOADING, "upload_time"),
}


class Job:
    """One claimed job, as a consumer works on it."""

    def __init__(self, claim: Claim, broker: Broker, services: Services, *, job_timeout: float = float("inf"),
                 secrets: Iterable[str] = (), status_interval: float = 0.0,
                 on_deferred: Callable[[], None] | None = None) -> None:
        self.claim = claim
        self.services = services
        self._broker = broker
        self._job_timeout = job_timeout
        self._secrets = tuple(secrets)
        #: Every log line of this run (for the result zip's log.txt), stamped and scrubbed.
        self.lines: list[str] = []
        self._pending: list[str] = []
        #: Fields waiting for the next write (a stage's duration rides on the next stage's status
        #: write, or on the final write): one fenced round trip per stage instead of two.
        self._pending_fields: dict[str, Any] = {}
        #: Seconds spent per stage.
        self.timings: dict[str, float] = {}
        self.parked = False
        self.lost: ClaimLost | None = None
        #: Status/progress changes wait up to this long for a write to share (0: written at once).
        self._status_interval = status_interval
        #: Told when a deferred change first waits (the worker wakes its supervisor thread).
        self._on_deferred = on_deferred
        #: `time.monotonic()` by which the deferred status/progress must be written, or None.
        self.due: float | None = None
        #: Writes of this job go out one at a time (the supervisor thread may make the due one).
        self._lock = threading.Lock()
        self._closed = False

    # -- what the job is --------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.claim.key

    @property
    def fields(self) -> dict[str, str]:
        """The job hash as claimed (producer fields plus `status`, `attempts`, ...)."""
        return self.claim.fields

    @property
    def attempts(self) -> int:
        """1 on the first claim, counting every claim that was not handed back."""
        return self.claim.attempts

    @property
    def previous_status(self) -> str:
        """The status before this claim (`waiting` for a zip parent whose children ended)."""
        return self.claim.previous_status

    @property
    def deadline(self) -> float:
        """`time.monotonic()` value at which the job's JOB_TIMEOUT runs out."""
        return self.claim.deadline

    @property
    def queue(self) -> str:
        return self._broker.queue

    @property
    def consumer_id(self) -> str:
        return self._broker.consumer_id

    def time_left(self) -> float:
        """Seconds left before JOB_TIMEOUT (may be negative)."""
        return self.claim.time_left()

    def check_deadline(self) -> float:
        """Seconds left; raises `JobTimeout` when none are (call it in long loops)."""
        left = self.time_left()
        if left <= 0:
            raise JobTimeout(timeout_reason(self._job_timeout))
        return left

    # -- writing back -----------------------------------------------------------------------
    def log(self, message: str, level: int = logging.INFO) -> None:
        """One line of the job's own story: process log, the Redis log list and the result zip."""
        if log.isEnabledFor(level):
            log.log(level, "%s %s", self.key, message, extra={"job": self.key, "queue": self.queue})
        stamped = f"{now_iso()} {scrub(message, self._secrets)}"
        self.lines.append(stamped)
        with self._lock:  # the supervisor thread may be taking the pending lines for a due write
            self._pending.append(stamped)

    def update(self, fields: Mapping[str, Any]) -> None:
        """Write fields into the job hash (and pending log lines), only while our claim holds."""
        self._write(fields, with_log=True)

    def _write(self, fields: Mapping[str, Any], with_log: bool) -> None:
        with self._lock:
            if self.lost is not None:
                raise self.lost
            self._write_locked(self._broker, fields, with_log)

    def _write_locked(self, broker: Broker, fields: Mapping[str, Any], with_log: bool) -> None:
        lines: list[str] = []
        if with_log:
            lines, self._pending = self._pending, []
        if self._pending_fields:
            fields, self._pending_fields = {**self._pending_fields, **fields}, {}
        self.due = None
        if not fields and not lines:
            return
        written = broker.update(self.claim, fields, lines)
        if written <= 0:
            self.lost = ClaimLost(self.key, vanished=written < 0)
            raise self.lost

    def _defer(self, fields: Mapping[str, Any]) -> None:
        """A status/progress change: written with the next write, or by `write_due` once due."""
        if self._status_interval <= 0:
            self._write(fields, with_log=True)
            return
        with self._lock:
            if self.lost is not None:
                raise self.lost
            self._pending_fields.update(fields)
            first = self.due is None
            if first:
                self.due = time.monotonic() + self._status_interval
        if first and self._on_deferred is not None:
            self._on_deferred()

    def write_due(self, broker: Broker, now: float | None = None) -> bool:
        """Write the deferred status/progress (with pending log lines) if due; called from the
        worker's supervisor thread with its own broker. Never waits for a write in progress and
        never raises: a lost claim shows at the job's next write. True when something was written."""
        due = self.due
        if due is None or (now if now is not None else time.monotonic()) < due:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # the job is writing right now: that write carries the change
        try:
            if self._closed or self.lost is not None or self.due is None:
                return False
            self._write_locked(broker, {}, with_log=True)
            return True
        except ClaimLost:
            return False
        except (redis.RedisError, OSError) as exc:
            self.due = time.monotonic() + max(self._status_interval, 1.0)  # tried again later
            log.warning("%s status not written (%s); retrying", self.key, type(exc).__name__)
            return False
        finally:
            self._lock.release()

    def close(self) -> tuple[dict[str, Any], list[str]]:
        """No more writes from here on: the fields and log lines still pending, for the final
        write (a deferred status or progress is dropped: the final write sets both)."""
        with self._lock:
            self._closed = True
            self.due = None
            fields, self._pending_fields = self._pending_fields, {}
            lines, self._pending = self._pending, []
        fields.pop("status", None)
        fields.pop("progress", None)
        return fields, lines

    def flush(self) -> None:
        """Push buffered log lines (and a finished stage's duration) to Redis now."""
        if (self._pending or self._pending_fields) and self.lost is None:
            self.update({})

    def progress(self, percent: float) -> None:
        """Report 0-100 progress (coalesced like stage statuses)."""
        self._defer({"progress": int(max(0, min(100, percent)))})

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage: its status shows in the hash (within STATUS_MIN_INTERVAL, see the module
        docstring), its duration lands in `{name}_time` with the job's next write.

        Known stages: download, preprocess, predict, postprocess, save, upload. Any other name
        is timed and logged but leaves `status` alone (a status is one of `Status`).
        """
        status, time_field = STAGES.get(name, (None, f"{name}_time"))
        self.check_deadline()
        self.log(f"stage {name} started")
        # the status waits for a write to share (with the previous stage's duration and log lines)
        if status is not None:
            self._defer({"status": status})
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + elapsed
        self.log(f"stage {name} finished in {elapsed:.3f}s")
        with self._lock:
            self._pending_fields[time_field] = round(self.timings[name], 6)

    def timing_fields(self, started: float) -> dict[str, float]:
        """Stage durations plus `total` since `started` (perf_counter)."""
        timings = {name: round(t, 6) for name, t in self.timings.items()}
        timings["total"] = round(time.perf_counter() - started, 6)
        return timings

    # -- zip fan-out / fan-in (what the `zip` consumer uses) --------------------------------
    def park(self, children_total: int, fields: Mapping[str, Any] | None = None) -> None:
        """Wait (`status=waiting`) until `children_total` child jobs end; the job comes back then
        with `previous_status == "waiting"`. Whatever `consume` returns afterwards is ignored."""
        self.flush()
        written = self._broker.park(self.claim, children_total, fields)
        if written <= 0:
            self.lost = ClaimLost(self.key, vanished=written < 0)
            raise self.lost
        self.parked = True

    def create_children(self, child_queue: str, common: Mapping[str, str],
                        children: Sequence[tuple[str, str, str]], batch: int = 200) -> int:
        """Record the child list and create each (key, input_file_name, original_name) once."""
        return self._broker.create_children(self.key, child_queue, common, children, batch)

    def child_keys(self) -> list[str]:
        return self._broker.child_keys(self.key)

    def child_count(self) -> int:
        return self._broker.child_count(self.key)

    def child_fields(self, child_keys: Sequence[str], names: Sequence[str]) -> list[dict[str, str | None]]:
        return self._broker.child_fields(child_keys, names)

    def expire_children(self) -> int:
        """Children and their logs expire with this job."""
        return self._broker.expire_children(self.key)

    def stored_log(self) -> list[str]:
        """The job's log as kept in Redis (across claims), after pushing pending lines."""
        self.flush()
        return self._broker.read_log(self.key) or list(self.lines)


def timeout_reason(job_timeout: float) -> str:
    return f"The job did not finish within JOB_TIMEOUT={job_timeout:g} seconds."
