"""`Job`: everything a consumer sees of one claimed job (never the Redis client behind it).

Fields, attempts and deadline come from the claim; `stage()`, `progress()`, `log()` and
`update()` write back through the broker's fenced steps, so a worker that lost its claim (or
whose job vanished) writes nothing more: `update()` raises `ClaimLost` and the worker drops the
job. Storage and the TF Serving client are in `job.services`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

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
                 secrets: Iterable[str] = ()) -> None:
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
        log.log(level, "%s %s", self.key, message, extra={"job": self.key, "queue": self.queue})
        stamped = f"{now_iso()} {scrub(message, self._secrets)}"
        self.lines.append(stamped)
        self._pending.append(stamped)

    def update(self, fields: Mapping[str, Any]) -> None:
        """Write fields into the job hash (and pending log lines), only while our claim holds."""
        self._write(fields, with_log=True)

    def _write(self, fields: Mapping[str, Any], with_log: bool) -> None:
        if self.lost is not None:
            raise self.lost
        lines: list[str] = []
        if with_log:
            lines, self._pending = self._pending, []
        if self._pending_fields:
            fields, self._pending_fields = {**self._pending_fields, **fields}, {}
        if not fields and not lines:
            return
        written = self._broker.update(self.claim, fields, lines)
        if written <= 0:
            self.lost = ClaimLost(self.key, vanished=written < 0)
            raise self.lost

    def flush(self) -> None:
        """Push buffered log lines (and a finished stage's duration) to Redis now."""
        if (self._pending or self._pending_fields) and self.lost is None:
            self.update({})

    def take_pending(self) -> list[str]:
        lines, self._pending = self._pending, []
        return lines

    def take_pending_fields(self) -> dict[str, Any]:
        """Fields not written yet (the last stage's duration): the final write carries them."""
        fields, self._pending_fields = self._pending_fields, {}
        return fields

    def progress(self, percent: float) -> None:
        """Report 0-100 progress."""
        self.update({"progress": int(max(0, min(100, percent)))})

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage: its status shows in the hash, its duration lands in `{name}_time`
        with the job's next write (the next stage's status, an update, a flush or the final write).

        Known stages: download, preprocess, predict, postprocess, save, upload. Any other name
        is timed and logged but leaves `status` alone (a status is one of `Status`).
        """
        status, time_field = STAGES.get(name, (None, f"{name}_time"))
        self.check_deadline()
        self.log(f"stage {name} started")
        # one fenced write per stage: its status, with the previous stage's duration and log lines
        # (the last stage's ride on the final write, or on the next update/flush)
        self._write({"status": status} if status is not None else {}, with_log=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + elapsed
        self.log(f"stage {name} finished in {elapsed:.3f}s")
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
