"""The worker: claim a job, hand it to the consumer, repeat; stay alive through anything.

Read top to bottom, `Worker.run` is the whole life of a process: wait for Redis, start the
supervisor thread (heartbeat, reaper, job deadline, shutdown grace), then loop on a blocking
claim (`BLMOVE`, no sleep-polling). SIGTERM stops claiming; the job in hand gets
`SHUTDOWN_GRACE` seconds to finish, else it is handed back to the queue head; exit code is 0.
Redis outages are waited out with capped, jittered backoff: a worker never crash-loops on a blip.
So is a TF Serving that cannot be reached (scaling from zero, restarting): the job that found it
so goes back to the queue head uncounted, and the worker stops claiming (/readyz says why) and
probes the server until it answers; heartbeats go on meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis

from . import idle_memory, startup
from .consumers.base import Consumer
from .errors import JobTimeout, ServingUnavailable
from .job import timeout_reason
from .middleware import Middleware, MiddlewareChain
from .queue.broker import Broker, Claim
from .queue.connection import RETRYABLE, connect_all, master_moved
from .runner import JobRunner, Outcome
from .services import Services
from .settings import Settings
from .utils.backoff import Backoff

log = logging.getLogger(__name__)

#: Longest the first claim waits for the consumer's warm-up (it goes on in the background after).
WARM_UP_SECONDS = 10.0


#: What the loop and the supervisor wait out: any Redis error or a broken connection.
_REDIS_DOWN = (redis.RedisError, *RETRYABLE)


class _StopClaiming(BaseException):
    """Raised from the signal handler to break out of an idle blocking claim."""


def make_consumer_id(hostname: str) -> str:
    """Unique per process: the host (pod) name plus a short random suffix."""
    return f"{hostname}-{secrets.token_hex(3)}"


class Worker:
    """One worker process serving one queue with one consumer."""

    def __init__(
        self,
        settings: Settings,
        consumer_cls: type[Consumer],
        *,
        middleware: list[Middleware] | None = None,
        storage: Any = None,
        client: redis.Redis | None = None,
        consumer_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.consumer_id = consumer_id or make_consumer_id(settings.HOSTNAME)
        # the blocking client's timeout outlasts its BLMOVE; the supervisor thread has its own
        # connections, so resetting the main thread's (after an outage or failover) never cuts a
        # heartbeat off mid-reply
        claim_timeout = settings.EMPTY_QUEUE_TIMEOUT + settings.REDIS_TIMEOUT + 1.0
        if client is None:
            self.redis, self.blocking_redis, self.supervisor_redis = connect_all(settings, None, claim_timeout, None)
        else:
            self.redis = self.blocking_redis = self.supervisor_redis = client
        self.middleware = MiddlewareChain(middleware)
        queue = settings.QUEUE + consumer_cls.queue_suffix
        broker_options = {
            "max_attempts": settings.MAX_ATTEMPTS,
            "expire_time": settings.EXPIRE_TIME,
            "heartbeat_ttl": settings.HEARTBEAT_TTL,
            "log_lines": settings.JOB_LOG_LINES,
        }
        self.broker = Broker(self.redis, queue, self.consumer_id, blocking_client=self.blocking_redis, **broker_options)
        self.broker.prefetch = self._may_prefetch  # the next claim rides on each job's final write
        self.broker.claim_ahead = settings.CLAIM_AHEAD  # ... and, for short jobs, the one after it
        self.broker.claim_ahead_max_seconds = settings.CLAIM_AHEAD_MAX_SECONDS
        self.broker.claim_batch = settings.CLAIM_BATCH  # several short jobs finished and started per call
        self.supervisor_broker = Broker(self.supervisor_redis, queue, self.consumer_id, **broker_options)
        # the consumer gets services, never a Redis client (the TF client caches model metadata in it)
        self.services = Services(settings, storage=storage, cache=self.redis)
        self.consumer = consumer_cls(settings, self.services)
        self.runner = JobRunner(settings, self.broker, self.consumer, self.services, self.middleware)
        self.runner.on_deferred = self._wake_supervisor  # a job's deferred status is due soon
        self.queue = queue
        self._claim_wait, self._job_timeout = settings.EMPTY_QUEUE_TIMEOUT, settings.JOB_TIMEOUT  # read once
        self.stopping = threading.Event()
        self.current: Claim | None = None
        self.shutdown_deadline: float | None = None
        self.last_heartbeat_ok: float = 0.0
        self.last_heartbeat_attempt: float = 0.0
        #: After our own heartbeats failed, no reaping before this (monotonic): see `_beat_and_reap`.
        self._reap_not_before: float = 0.0
        self._beat_failed = False
        self._recover_pending: bool | None = None  # a failed `_recover_own_list` (its `uncount`) to redo
        self.jobs_processed = 0
        #: Why the worker is not claiming (TF Serving unreachable), or None: /readyz and the metric read it.
        self.model_wait: str | None = None
        self._blocking = False
        self._master_moved = False
        self._main_thread_id = threading.get_ident()
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._wake = threading.Event()
        #: `time.monotonic()` the supervisor sleeps until: a claim whose deadline comes earlier wakes
        #: it (nothing else about a job's start or end needs it sooner, so most jobs never do)
        self._sleep_until = float("-inf")

    # -- life --------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve the queue until SIGTERM/SIGINT; returns the process exit code (0)."""
        self._install_signals()
        log.info("worker %s serving queue %r with %s", self.consumer_id, self.queue, type(self.consumer).__name__)
        warm_up = self._start_warm_up()  # overlaps the Redis connection and the first heartbeat
        try:
            if not self._wait_for_redis():
                return 0
            self._supervisor.start()
            self._await_warm_up(warm_up)
            self.middleware.worker_started(self)
            backoff = Backoff(base=0.2, cap=self.settings.RETRY_BACKOFF_CAP)
            while not self.stopping.is_set():
                try:
                    outcome = self._step()
                    if outcome is Outcome.UNAVAILABLE:
                        self._wait_for_model(self.runner.unavailable)
                        backoff.reset()
                    elif outcome in (Outcome.REQUEUED, Outcome.DEAD):
                        self.stopping.wait(backoff.next())
                    elif outcome is not None:
                        backoff.reset()
                except _StopClaiming:
                    break
                except JobTimeout:
                    # a timeout that landed just after its job ended, maybe inside the next claim:
                    # anything it left in our list goes back to the queue
                    self._recover_own_list()
                    continue
                except _REDIS_DOWN as exc:
                    self.current = None
                    delay = backoff.next()
                    log.warning("redis unavailable (%s); retrying in %.2fs", type(exc).__name__, delay)
                    self._reset_connections()
                    self.stopping.wait(delay)
                    self._recover_own_list(uncount=_is_outage(exc))
                except Exception:  # a bug must not crash-loop the fleet: log, back off, carry on
                    self.current = None
                    delay = backoff.next()
                    log.exception("unexpected error in the claim loop; retrying in %.2fs", delay)
                    self.stopping.wait(delay)
                    self._recover_own_list()
        except _StopClaiming:
            pass
        finally:
            self._shutdown()
        return 0

    def _step(self) -> Outcome | None:
        """Claim one job (blocking only when none waits) and run it; its outcome, or None when idle."""
        if self.stopping.is_set():
            return None
        if self._master_moved:
            self._master_moved = False
            self._reset_connections()
            self._recover_own_list(uncount=True)
        if self._recover_pending is not None:  # the last try hit Redis still down (e.g. loading)
            self._recover_own_list(uncount=self._recover_pending)
        claimed = self.broker.claim_next(self._claim_wait, self._job_timeout, waiting=self._waiting)
        if claimed is None:
            return None
        self.current = job = claimed.job
        if job is not None and min(job.deadline, self.broker.buffer_due(), self.broker.run_due(job)) < self._sleep_until:
            # its JOB_TIMEOUT runs out, or (batches) buffered final writes are due or the jobs
            # of its batch behind it must go back, before the supervisor would look again
            self._wake.set()
        try:
            outcome = self.runner.run(claimed)
        finally:
            # no wake at the end: the supervisor wakes for shutdown (`_shutdown`, the signal) and
            # a spurious wake at the ended job's deadline is harmless; a thread switch per job is not
            self.current = None
        if job is not None:
            self.jobs_processed += 1
        return outcome

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Around the idle blocking claim: SIGTERM may break out of it (nothing is held yet)."""
        idle_memory.went_idle(self.settings.IDLE_MALLOC_TRIM)  # the queue ran dry: free heap back to the OS
        self._blocking = True
        try:
            if self.stopping.is_set():
                raise _StopClaiming()
            yield
        finally:
            self._blocking = False

    def _may_prefetch(self) -> bool:
        """May a job's final write claim the next job in the same round trip? Only while this
        worker would claim next anyway (not stopping); a held claim goes back on shutdown."""
        return not self.stopping.is_set()

    def _start_warm_up(self) -> threading.Thread | None:
        """Run the consumer's `warm_up()` in a thread; it never fails the worker. When it ends,
        start-up is over (`startup.startup_done`: the GC the entry point paused resumes)."""
        hook = getattr(self.consumer, "warm_up", None)
        if hook is None:
            startup.startup_done()
            return None

        def run() -> None:
            started = time.perf_counter()
            try:
                hook()
                log.debug("warm-up done in %.3fs", time.perf_counter() - started)
            except Exception:
                log.warning("consumer warm-up failed; continuing without it", exc_info=True)
            finally:
                startup.startup_done()

        thread = threading.Thread(target=run, name="warm-up", daemon=True)
        thread.start()
        return thread

    def _await_warm_up(self, thread: threading.Thread | None) -> None:
        """Before the first claim: wait for the warm-up, at most WARM_UP_SECONDS (heartbeats go on)."""
        if thread is None:
            return
        deadline = time.monotonic() + WARM_UP_SECONDS
        while thread.is_alive() and not self.stopping.is_set() and time.monotonic() < deadline:
            thread.join(0.05)
        if thread.is_alive() and not self.stopping.is_set():
            log.warning("consumer warm-up still running after %gs; claiming anyway", WARM_UP_SECONDS)
        startup.startup_done()  # (done already unless the warm-up is still running)

    def _wait_for_redis(self) -> bool:
        """Heartbeat until Redis answers (or we are told to stop)."""
        backoff = Backoff(base=0.2, cap=self.settings.RETRY_BACKOFF_CAP)
        while not self.stopping.is_set():
            try:
                self.broker.heartbeat()
                self.last_heartbeat_ok = time.monotonic()
                self._recover_own_list()
                return True
            except _REDIS_DOWN as exc:
                self._beat_failed = True  # the supervisor holds its first reap back (see _beat_and_reap)
                delay = backoff.next()
                log.warning("waiting for redis (%s); retrying in %.2fs", type(exc).__name__, delay)
                self.stopping.wait(delay)
        return False

    def _wait_for_model(self, cause: ServingUnavailable | None) -> None:
        """Claim nothing until the model server answers: probe it with capped, jittered backoff
        (the probe itself waits up to 2 s for the channel), so claiming resumes within seconds of
        the server coming up. The supervisor keeps heartbeating, so the reaper leaves us alone."""
        reason = str(cause) if cause is not None else "TensorFlow Serving is unreachable"
        model = getattr(cause, "model", "") or ""
        version = getattr(cause, "version", None)
        tf = self.services.tf
        probe = getattr(tf, "probe", None)
        self.model_wait = reason
        started = last = time.monotonic()
        log.warning("not claiming until TensorFlow Serving answers: %s", reason)
        self.middleware.model_wait(self.queue, reason, 0.0)
        backoff = Backoff(base=0.25, cap=2.0)
        try:
            if probe is None or not model:  # a stand-in client that cannot be probed: one pause
                self.stopping.wait(1.0)
            while not self.stopping.is_set() and probe is not None and model:
                try:
                    state, detail = probe(model, version, timeout=min(2.0, float(self.settings.GRPC_TIMEOUT)))
                except Exception:
                    log.exception("TF Serving probe failed; claiming again")
                    break
                now = time.monotonic()
                self.middleware.model_wait(self.queue, reason, now - last)
                last = now
                if state == "up":
                    break
                if detail and detail != self.model_wait:
                    self.model_wait = detail
                self.stopping.wait(backoff.next())
        finally:
            self.model_wait = None
            self.middleware.model_wait(self.queue, None, time.monotonic() - last)
        if not self.stopping.is_set():
            log.info("TensorFlow Serving answers again after %.1fs; claiming", time.monotonic() - started)

    def _recover_own_list(self, uncount: bool = False) -> None:
        """Keys in our processing list that we do not hold (a lost BLMOVE reply) go back."""
        try:
            moved = self.broker.release_all(uncount)
            self._recover_pending = None
            if moved:
                log.info("returned %d unclaimed job(s) from %s to the queue", moved, self.broker.processing_key)
        except _REDIS_DOWN:
            # tried again before the next claim: a key left in our list would wait there forever
            # (we are alive, so no reaper takes it)
            self._recover_pending = bool(uncount or self._recover_pending)

    def _reset_connections(self) -> None:
        """Drop every pooled connection; a final write still in flight has its reply read first
        (else the next call on that lane would read a reply of a connection already dropped)."""
        with contextlib.suppress(*_REDIS_DOWN):
            self.broker.settle()
        for client in {id(self.redis): self.redis, id(self.blocking_redis): self.blocking_redis}.values():
            try:
                client.connection_pool.disconnect()
            except Exception as exc:  # noqa: BLE001 - best effort
                log.debug("disconnect failed: %s", exc)

    def _shutdown(self) -> None:
        self.stopping.set()
        self._wake.set()
        self._reset_connections()  # the blocking connection may have been interrupted mid-reply
        try:
            self._recover_own_list()
            self.broker.deregister()
        except _REDIS_DOWN:
            log.warning("could not deregister; the reaper will return anything we held")
        self.middleware.worker_stopped(self)
        log.info("worker %s stopped after %d job(s)", self.consumer_id, self.jobs_processed)

    # -- signals -----------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = not self.stopping.is_set()
        job = self.current
        if job is not None and self.shutdown_deadline is None:
            # set before waking the supervisor, or it sleeps a whole heartbeat past the grace
            self.shutdown_deadline = time.monotonic() + self.settings.SHUTDOWN_GRACE
        self.stopping.set()
        self._wake.set()
        if first:
            log.info("received %s; no new claims", signal.Signals(signum).name)
        if job is not None:
            log.info("finishing %s within SHUTDOWN_GRACE=%gs", job.key, self.settings.SHUTDOWN_GRACE)
        elif self._blocking:
            raise _StopClaiming()

    # -- supervisor thread: heartbeat, reaper, deadlines -------------------------------------
    def _supervise(self) -> None:
        interval = self.settings.HEARTBEAT_INTERVAL
        next_beat = time.monotonic()
        timed_out: str | None = None
        while True:
            now = time.monotonic()
            if now >= next_beat:
                try:
                    self._beat_and_reap(interval)
                except Exception:  # a dead supervisor means no heartbeats: never die
                    # e.g. ValueError from redis-py when the main thread reset the pool mid-reply
                    log.exception("heartbeat/reaper step failed; retrying next interval")
                next_beat = now + interval
            job = self.current
            if job is not None:
                if self.shutdown_deadline is not None and now >= self.shutdown_deadline:
                    self._hand_back_and_exit(job)
                if now >= job.deadline and timed_out != job.token:
                    timed_out = job.token
                    log.warning("%s exceeded JOB_TIMEOUT=%gs", job.key, self.settings.JOB_TIMEOUT)
                    _raise_in_thread(self._main_thread_id, JobTimeout)
                hard = job.deadline + max(self.settings.SHUTDOWN_GRACE, 5.0)
                if now >= hard:
                    self._abandon_stuck_job(job)
            status_due = self._write_due_status(now)
            flush_due = self._batch_upkeep(now, job)
            if self.stopping.is_set() and job is None:
                return
            wake_at = [next_beat, flush_due] if status_due is None else [next_beat, status_due, flush_due]
            if job is not None:
                wake_at.append(job.deadline if timed_out != job.token else job.deadline + max(self.settings.SHUTDOWN_GRACE, 5.0))
                if self.shutdown_deadline is not None:
                    wake_at.append(self.shutdown_deadline)
            target = min(wake_at)
            self._sleep_until = target
            if self.current is not job:  # claimed meanwhile: it may not have seen `target` (see `_step`)
                continue
            self._wake.wait(max(0.01, target - time.monotonic()))
            self._wake.clear()

    def _wake_supervisor(self) -> None:
        self._wake.set()

    def _batch_upkeep(self, now: float, job: Claim | None) -> float:
        """Batches, while a long job runs: buffered final writes past their bound are sent, and
        the jobs of its batch waiting behind it go back to the queue (a slow job never keeps
        waiting jobs from other workers), on the supervisor's connection. Returns when to look
        again (inf: nothing to watch)."""
        broker = self.broker
        try:
            if now >= broker.buffer_due():
                broker.flush(via=self.supervisor_broker)
            if job is not None and now >= broker.run_due(job):
                moved = broker.give_back_unrun(self.supervisor_broker)
                log.info("%s runs long; %d job(s) of its batch back to the queue", job.key, moved)
        except _REDIS_DOWN as exc:  # they stay in our list: recovery returns them
            log.warning("batch upkeep failed (%s)", type(exc).__name__)
        return min(broker.buffer_due(), broker.run_due(job) if job is not None else float("inf"))

    def _write_due_status(self, now: float) -> float | None:
        """The running job's deferred stage status/progress, once due (STATUS_MIN_INTERVAL);
        returns when to look again, or None."""
        running = self.runner.job
        if running is None or running.due is None:
            return None
        if now >= running.due:
            running.write_due(self.supervisor_broker, now)
        return running.due

    def _beat_and_reap(self, interval: float) -> None:
        self.last_heartbeat_attempt = time.monotonic()
        try:
            moved = [master_moved(c) for c in (self.supervisor_redis, self.redis, self.blocking_redis)]
            if any(moved[1:]):
                log.warning("redis master moved (Sentinel failover); reconnecting")
                self._master_moved = True
            self.supervisor_broker.heartbeat()
            self.last_heartbeat_ok = time.monotonic()
            self.middleware.heartbeat(self.queue, True)
        except _REDIS_DOWN as exc:
            log.warning("heartbeat failed (%s)", type(exc).__name__)
            self.middleware.heartbeat(self.queue, False)
            self._beat_failed = True
            return
        if self._beat_failed:
            # Redis was out of reach (restart, failover): every worker's score may have lapsed
            # meanwhile. The others beat again within one interval of reaching it (plus one socket
            # timeout for an attempt in flight); reaping before then would take live workers for
            # dead, so a short HEARTBEAT_TTL stays safe through outages longer than it.
            self._beat_failed = False
            self._reap_not_before = self.last_heartbeat_ok + interval + float(self.settings.REDIS_TIMEOUT)
        if time.monotonic() < self._reap_not_before:
            return
        try:
            # the lock lapses a little before our next attempt: held for a whole interval, it was
            # often still ours when we came back (timer drift), so a lone reaper ran every other
            # interval and a dead worker's job waited TTL + 2 intervals instead of TTL + 1
            reaped = self.supervisor_broker.reap(lock_ms=int(interval * 800))
        except _REDIS_DOWN as exc:
            log.warning("reaper failed (%s)", type(exc).__name__)
            return
        if reaped and (reaped[0] or reaped[1] or reaped[2]):
            recovered, dead, consumers = reaped
            log.info("reaper: %d dead worker(s); %d job(s) requeued, %d dead-lettered", consumers, recovered, dead)
            self.middleware.jobs_recovered(self.queue, recovered, dead)

    def _hand_back_and_exit(self, job: Claim) -> None:
        """Shutdown grace ran out: give the job back to the queue head and exit 0.

        The jobs held behind it (claimed ahead, never started) go back with it, in queue order:
        every key in our processing list, the running job's attempt not counted."""
        try:
            self.broker.flush(via=self.supervisor_broker)  # results of jobs it ran in a batch
            moved = self.supervisor_broker.release_all(uncount=True)
            log.info("%s not finished within SHUTDOWN_GRACE; %d job(s) back to the queue", job.key, moved)
            self.supervisor_broker.deregister()
        except _REDIS_DOWN:
            log.warning("%s could not be released; the reaper will requeue it", job.key)
        logging.shutdown()
        os._exit(0)

    def _abandon_stuck_job(self, job: Claim) -> None:
        """The job ignored its timeout (stuck in native code): fail/requeue it and restart
        (the jobs held behind it, never started, go back to the queue head first)."""
        try:
            self.broker.flush(via=self.supervisor_broker)  # results of jobs it ran in a batch
            outcome = self.supervisor_broker.retry(job, timeout_reason(self.settings.JOB_TIMEOUT))
            self.supervisor_broker.release_all(also=self.broker.unrun_tokens())
            log.error("%s stuck past JOB_TIMEOUT; %s; restarting the worker", job.key, outcome)
        except _REDIS_DOWN:
            log.error("%s stuck past JOB_TIMEOUT; restarting the worker", job.key)
        logging.shutdown()
        os._exit(70)


def _is_outage(exc: BaseException) -> bool:
    """Redis unreachable, loading, read-only (failover) or out of memory: not the job's fault, so
    the job cut short gets its attempt back. Any other error reply may come from the job's own
    data (a Lua step failing on it) and counts, so such a job ends on the dead list, not in a loop."""
    if isinstance(exc, (redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError)):
        return True
    return not isinstance(exc, redis.ResponseError)


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    """Deliver an exception to another thread at its next Python instruction."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
