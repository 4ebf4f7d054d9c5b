"""One claimed job, start to end, and the one place its outcome is decided.

The worker (and the plug-in kit) hands every claim to `JobRunner.run`; it builds the `Job`, calls
the consumer, turns what happened into exactly one fenced write (done, failed, retried,
dead-lettered, parked, released) or none (lost), and emits the job's middleware events. Consumers
only return result fields or raise. A job whose model server could not be reached at all
(`ServingUnavailable`) is released to the queue head uncounted: the worker then waits for the server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from .errors import (
    ClaimLost,
    JobTimeout,
    ServingUnavailable,
    TransientError,
    UserError,
    one_sentence,
)
from .job import Job, timeout_reason
from .logs import scrub
from .middleware import Middleware, MiddlewareChain
from .queue import keys
from .queue.broker import Broker, ClaimResult
from .queue.status import CLAIMABLE, FailureType, Status, _Word
from .services import Services
from .settings import Settings
from .utils.timestamps import age_seconds

log = logging.getLogger("redis_consumer.consumers.base")


class Outcome(_Word):
    """What became of one claim (`str`-valued: `Outcome.DONE == "done"`)."""

    DONE = "done"  # finished, result fields written
    FAILED = "failed"  # bad input (failure_type=user); not retried
    REQUEUED = "requeued"  # system error; back on the queue for another attempt
    DEAD = "dead"  # attempts used up; failed (system) and on dead-{queue}
    PARKED = "parked"  # a zip parent waiting for its children
    LOST = "lost"  # another worker owns the job now, or it vanished: nothing written
    SKIPPED = "skipped"  # nothing to run (missing, final, not a hash)
    UNAVAILABLE = "unavailable"  # TF Serving unreachable: back to the queue head, attempt not counted


class JobRunner:
    """Runs claims through one consumer and decides their outcomes."""

    def __init__(self, settings: Settings, broker: Broker, consumer: Any, services: Services,
                 middleware: Middleware | None = None) -> None:
        self.settings = settings
        self.broker = broker
        self.consumer = consumer
        self.services = services
        self.middleware = middleware or MiddlewareChain()
        self.queue = broker.queue
        self._secrets = settings.secret_values()
        #: The `ServingUnavailable` of the last claim that ended `UNAVAILABLE` (the worker waits on it).
        self.unavailable: ServingUnavailable | None = None
        #: The job running now (the worker's supervisor writes its deferred status when due).
        self.job: Job | None = None
        #: STATUS_MIN_INTERVAL; `on_deferred` is called when a job's status change starts waiting.
        self.status_interval = float(getattr(settings, "STATUS_MIN_INTERVAL", 0.0))
        self.on_deferred: Callable[[], None] | None = None
        self._job_timeout = settings.JOB_TIMEOUT  # read once: a settings read is a descriptor call

    def run(self, claimed: ClaimResult) -> Outcome:
        """The outcome of one claim (the consumer runs only for `ok`)."""
        if claimed.outcome != "ok" or claimed.job is None:
            return self._not_run(claimed)
        job = Job(claimed.job, self.broker, self.services, job_timeout=self._job_timeout,
                  secrets=self._secrets, status_interval=self.status_interval, on_deferred=self.on_deferred)
        started = time.perf_counter()
        self.consumer.job = job
        self.job = job
        try:
            if self.middleware.active:
                self.middleware.job_claimed(self.queue, job.key, age_seconds(job.fields.get("created_at")))
            job.log(f"claimed by {self.broker.consumer_id} (attempt {job.attempts})")
            try:
                result = self._consume(job)
            except JobTimeout as exc:
                text = str(exc)
                return self._retry(job, text if text and text != str(JobTimeout()) else
                                   timeout_reason(self.settings.JOB_TIMEOUT), started)
            except ClaimLost as exc:
                return self._lost(job, exc)
            except UserError as exc:
                return self._end(job, Status.FAILED, {"reason": self._sentence(exc),
                                                      "failure_type": FailureType.USER}, started)
            except ServingUnavailable as exc:
                return self._hand_back(job, exc)
            except TransientError as exc:
                return self._retry(job, str(exc), started)
            if job.lost is not None:  # the consumer swallowed the ClaimLost
                return self._lost(job, job.lost)
            if job.parked:
                job.log("waiting for child jobs")
                self._flush(job)
                return Outcome.PARKED
            return self._end(job, Status.DONE, result, started)
        finally:
            self.consumer.job = None
            self.job = None
            job.close()  # a deferred status is never written after the job's outcome

    # -- the consumer's part ----------------------------------------------------------------
    def _consume(self, job: Job) -> dict[str, Any]:
        """Check, validate, consume, normalise; unknown exceptions become system errors."""
        try:
            if job.claim.unreadable:
                name = job.claim.unreadable[0][:60]
                raise UserError(f"The job's field {name!r} is not valid UTF-8 text; resubmit the job with plain "
                                "text in that field.")
            if job.previous_status not in CLAIMABLE:
                raise UserError(f"The job's status {job.previous_status[:40]!r} is not one a producer may set; "
                                "submit jobs with status 'new'.")
            self.consumer.validate(job.key, job.fields)
            return _result_fields(self.consumer.consume(job), job.parked)
        except (UserError, ClaimLost, TransientError, redis.RedisError):  # incl. ServingUnavailable
            raise
        except Exception as exc:
            log.exception("%s unexpected error", job.key)
            # the exception's text stays in the worker log: library messages can hold URLs,
            # credentials or several lines, none of which belongs in a user-facing reason
            raise TransientError(f"the worker hit an internal error ({type(exc).__name__})") from exc

    # -- outcomes ---------------------------------------------------------------------------
    def _end(self, job: Job, status: Status, extra: Mapping[str, Any], started: float) -> Outcome:
        timings = job.timing_fields(started)
        job.log(f"{status.value} in {timings['total']:.3f}s" + (f": {extra['reason']}" if "reason" in extra else ""))
        pending, lines = job.close()
        fields = {**pending, "total_time": timings["total"], **kiosk_aliases(timings), **extra}
        if status == Status.FAILED:
            fields.setdefault("failure_type", FailureType.USER)
        written = self.broker.finish(job.claim, status, fields, log_lines=lines)
        if written <= 0:
            return self._lost(job, ClaimLost(job.key, vanished=written < 0), finished=True)
        if self.middleware.active:
            failure = fields.get("failure_type")
            self.middleware.job_finished(self.queue, job.key, str(status), str(failure) if failure else None,
                                         timings)
        return _END_OUTCOMES[status]

    def _retry(self, job: Job, reason: str, started: float) -> Outcome:
        reason = self._sentence(reason)
        job.log(f"system error: {reason}", logging.WARNING)
        self._flush(job)
        if job.lost is not None:
            return self._lost(job, job.lost)
        result = self.broker.retry(job.claim, _final_reason(reason, job.attempts))
        if result in ("stale", "vanished", "final"):
            return self._lost(job, ClaimLost(job.key, vanished=result == "vanished"))
        outcome = Outcome(result)
        self.middleware.job_requeued(self.queue, job.key, str(outcome))
        if outcome == Outcome.DEAD:
            self.middleware.job_finished(self.queue, job.key, str(Status.FAILED), str(FailureType.SYSTEM),
                                         job.timing_fields(started))
        return outcome

    def _hand_back(self, job: Job, exc: ServingUnavailable) -> Outcome:
        """The model server was unreachable: not the job's fault, so its attempt is given back."""
        reason = self._sentence(exc)
        job.log(f"{reason}; back to the queue, attempt not counted", logging.WARNING)
        self._flush(job)
        if job.lost is not None:
            return self._lost(job, job.lost)
        result = self.broker.release(job.claim, f"waiting for the model server: {reason}")
        if result != "released":
            return self._lost(job, ClaimLost(job.key, vanished=result == "vanished"))
        self.unavailable = exc
        self.middleware.job_requeued(self.queue, job.key, "released")
        return Outcome.UNAVAILABLE

    def _lost(self, job: Job, exc: ClaimLost, finished: bool = False) -> Outcome:
        if exc.vanished:
            log.warning("%s vanished (deleted, expired or Redis lost its data); dropping our copy", job.key)
        elif finished:
            log.warning("%s finished, but a newer claim owns it; result discarded", job.key)
        else:
            log.warning("%s claim lost to another worker; dropping our copy", job.key)
        return Outcome.LOST

    def _not_run(self, claimed: ClaimResult) -> Outcome:
        key = claimed.key
        if claimed.outcome == "missing":
            log.warning("%s: job hash no longer exists (expired or deleted); dropped", key)
        elif claimed.outcome == "wrongtype":
            log.error("%s: job key holds a %s, not a hash; moved to %s", key, claimed.detail, keys.dead(self.queue))
        elif claimed.outcome == "final":
            log.info("%s: job is already %s; dropped without redoing it", key, claimed.detail)
        elif claimed.outcome == "dead":
            log.error("%s: attempts used up (MAX_ATTEMPTS=%d) before this claim; moved to %s", key,
                      self.broker.max_attempts, keys.dead(self.queue))
            self.middleware.job_requeued(self.queue, key, str(Outcome.DEAD))
            self.middleware.job_finished(self.queue, key, str(Status.FAILED), str(FailureType.SYSTEM), {})
            return Outcome.DEAD
        elif claimed.outcome == "unreadable":
            log.error("%s: job key is not UTF-8; failed and moved to %s", key, keys.dead(self.queue))
            self.middleware.job_finished(self.queue, key, str(Status.FAILED), str(FailureType.USER), {})
            return Outcome.FAILED
        return Outcome.SKIPPED

    # -- helpers ----------------------------------------------------------------------------
    def _sentence(self, message: Any) -> str:
        return one_sentence(scrub(str(message), self._secrets))

    @staticmethod
    def _flush(job: Job) -> None:
        try:
            job.flush()
        except ClaimLost:
            pass
        except redis.RedisError as exc:  # the log line is not worth losing the outcome for
            log.warning("%s job log not written (%s)", job.key, type(exc).__name__)


#: The outcome of each final status `_end` writes.
_END_OUTCOMES = {Status.DONE: Outcome.DONE, Status.FAILED: Outcome.FAILED}


def _result_fields(result: Any, parked: bool) -> dict[str, Any]:
    """What `consume` returned -> the fields of `done` (None or a mapping; kiosk: "done")."""
    if parked or result is None:
        return {}
    if type(result) is dict and "status" not in result:  # what most consumers return
        return dict(result)
    if isinstance(result, str) and result == Status.DONE:
        return {}  # the kiosk's consumers return their final status
    if not isinstance(result, Mapping):
        raise TypeError(f"consume() returned {type(result).__name__}; return a mapping of result fields or None")
    fields = dict(result)
    status = fields.pop("status", Status.DONE)
    if status != Status.DONE:
        raise TypeError("consume() returned a status; raise UserError to fail a job")
    return fields


def kiosk_aliases(timings: Mapping[str, float]) -> dict[str, float]:
    """Our stage times under the kiosk's names: kiosk-client's summary reads `prediction_time`
    (kiosk-client 0.8.4 kiosk_client/job.py:299-331); `predict_time` stays too."""
    return {"prediction_time": timings["predict"]} if "predict" in timings else {}


def _final_reason(reason: str, attempts: int) -> str:
    text = reason.rstrip(".")
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    return f"The job failed after {tries} because of a system error ({text}); resubmit it once the service recovers."
