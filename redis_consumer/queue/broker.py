"""The broker: the one door into Redis for jobs (claim, update, finish, park, requeue, heartbeat,
reap, enqueue, zip fan-out/fan-in bookkeeping), one queue and one consumer id per instance.

Every state change is one Lua step from `lua/` (loaded by `scripts`); this class names the keys,
passes the arguments and turns replies into Python values. It knows nothing about consumers.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import redis
from redis.client import NEVER_DECODE

from ..utils.timestamps import now_iso
from . import keys
from .ahead import ClaimAhead
from .batch import Batches
from .claims import DEAD_REASON, Claim, ClaimResult, Job, dead_reason  # noqa: F401  (re-exported: queue.broker is where callers import them)
from .fanout import FanOut
from .fields import _decode_fields, _flatten, _text
from .scripts import MISSED, Script, lane_for

_dead_reason = dead_reason

#: The fields the claim step writes (over whatever the producer left in them).
_CLAIM_FIELDS = frozenset(("status", "claim", "updated_by", "identity_started", "started_at", "updated_at", "attempts"))

BAD_KEY_REASON = "The job's key is not valid UTF-8 text; submit it again under a plain-text key."


class Broker(FanOut, ClaimAhead, Batches):
    """Redis operations of the job protocol for one queue and one consumer id."""

    def __init__(
        self,
        client: redis.Redis,
        queue: str,
        consumer_id: str,
        *,
        blocking_client: redis.Redis | None = None,
        max_attempts: int = 3,
        expire_time: int = 3600,
        heartbeat_ttl: float = 30.0,
        log_lines: int = 200,
    ) -> None:
        self.redis = client
        self.blocking = blocking_client or client
        self.queue = queue
        self.consumer_id = consumer_id
        self.max_attempts = max_attempts
        self.expire_time = expire_time
        self.heartbeat_ttl = heartbeat_ttl
        self.log_lines = log_lines
        self.processing_key = keys.processing(queue, consumer_id)
        self.consumers_key = keys.consumers(queue)
        self.dead_key = keys.dead(queue)
        self._completed_key = keys.completed_counter(queue)
        #: the last claim left the queue empty: the next claim blocks (BLMOVE) at once instead of
        #: first trying a claim step that would find nothing (one script call less per job)
        self._queue_empty = False
        #: the queue's length at the last claim that told it (sizes the next batch, `batch.Batches`)
        self._waiting = 0
        #: Set by the worker: asked at each `finish`, True lets it claim the next job in the same
        #: round trip (never while stopping). The claim waits in `_prefetched` for `claim_next`.
        self.prefetch: Callable[[], bool] | None = None
        self._prefetched: ClaimResult | None = None
        #: Claim ahead: at most this many jobs held behind the running one (0 = never), and only
        #: while the recent jobs' mean wall time (`_recent`, seconds, moving average) is below
        #: `claim_ahead_max_seconds`, so slow jobs never keep waiting jobs from other workers.
        self.claim_ahead = 0
        self.claim_ahead_max_seconds = 0.0
        self._recent = float("inf")
        #: jobs claimed ahead, oldest first: (raw key, HGETALL as read then or None); in our
        #: processing list, not started (no token, no attempt counted)
        self._held: deque[tuple[bytes, list[bytes] | None]] = deque()
        self._job_timeout = float("inf")
        #: Batches (`batch.Batches`): at most this many jobs started per final write (1 = one at a
        #: time), only while jobs wait and recent jobs are short (as for claiming ahead, which a
        #: batch setting above 1 replaces)
        self.claim_batch = 1
        self._init_batches()
        #: fencing tokens: 64 random bits each, from a generator seeded by the OS (a token only has
        #: to differ from every other claim's, and os.urandom per claim is a system call)
        self._tokens = random.Random(os.urandom(16))
        self._lane = lane = lane_for(client)  # the connection our scripts keep for the thread that calls them (one per pool)
        #: the blocking claim's own kept connection (its reply is on the pickup path: a pool
        #: connection given back before the claim step would delay every idle pickup)
        self._blocking_lane = lane_for(self.blocking)
        for name in ("claim", "bury", "update", "finish", "park", "requeue", "release_all", "heartbeat", "reap",
                     "enqueue", "fanout", "set_children", "expire_children", "finish_claim", "finish_batch"):
            setattr(self, f"_{name}", Script(client, name, lane))

    # -- claiming: the one claim path (worker, tests and the plug-in kit) --------------------
    def claim_next(
        self,
        timeout: float,
        job_timeout: float = float("inf"),
        *,
        waiting: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> ClaimResult | None:
        """Claim the oldest job; only when none waits, block up to `timeout` seconds (BLMOVE).

        `waiting()` is entered around the blocking wait (the worker uses it to let SIGTERM break
        out of an idle wait). None when nothing arrived in time.
        """
        self._job_timeout = job_timeout
        if self._batched:  # started by a batch call, handed out one by one
            claimed = self._hand_out(job_timeout)
            if claimed is not None:
                return claimed
        if self._buffer:
            self.flush()
        if self._prefetched is not None:  # (started by a final write maybe still in flight)
            claimed, self._prefetched = self._prefetched, None
            return claimed
        self._lane.settle()  # a final write still in flight may carry the next job
        if self._prefetched is not None:
            claimed, self._prefetched = self._prefetched, None
            return claimed
        if self._held:  # the job before it ended without a final write (retry, hand-back, park)
            return self._start_held(job_timeout)
        if not self._queue_empty:
            claimed = self._claim_step("", job_timeout)
            if claimed is not None:
                return claimed
        with (waiting or nullcontext)():
            key = self._pop_raw(timeout)
        if key is None:
            return None
        return self._claim_step(key, job_timeout)

    def _start_held(self, job_timeout: float) -> ClaimResult | None:
        """The claim step on the oldest job held ahead (if it is still in our list)."""
        raw_key, flat = self._held.popleft()
        claim_keys, args = self._claim_args(raw_key)
        reply = self._claim(keys=claim_keys, args=[*args, "1"], raw=True)
        return self._claim_result(reply, args, job_timeout, flat or [])

    def pop(self, timeout: float) -> str | bytes | None:
        """Block up to `timeout` seconds for the oldest waiting key and move it to our list.

        The key as text (bytes when it is not UTF-8: `claim()` then sets it aside).
        """
        raw = self._pop_raw(timeout)
        try:
            return raw.decode("utf-8") if raw is not None else None
        except UnicodeDecodeError:
            return raw

    def _pop_raw(self, timeout: float) -> bytes | None:
        # raw bytes: redis-py would raise UnicodeDecodeError on a key that is not UTF-8
        command = ("BLMOVE", self.queue, self.processing_key, "RIGHT", "LEFT", timeout)
        reply = self._blocking_lane.call(command, raw=True)
        if reply is MISSED:  # not the lane's thread, or the connection broke: redis-py's retries
            reply = self.blocking.execute_command(*command, **{NEVER_DECODE: True})
        return reply

    def claim(self, key: str | bytes, job_timeout: float = float("inf")) -> ClaimResult:
        """The claim step on a key already moved into our processing list."""
        result = self._claim_step(key, job_timeout)
        assert result is not None
        return result

    def try_claim(self, job_timeout: float = float("inf")) -> ClaimResult | None:
        """Move and claim the oldest waiting key in one step; None if the queue is empty."""
        return self._claim_step("", job_timeout)

    def _claim_args(self, key: str | bytes) -> tuple[list[Any], list[Any]]:
        token, stamp = f"{self._tokens.getrandbits(64):016x}", now_iso()
        return ([self.queue, self.processing_key, self.dead_key],
                [token, self.consumer_id, stamp, self.max_attempts, key, _dead_reason(self.max_attempts),
                 self.expire_time])

    def _claim_step(self, key: str | bytes, job_timeout: float) -> ClaimResult | None:
        claim_keys, args = self._claim_args(key)
        return self._claim_result(self._claim(keys=claim_keys, args=args, raw=True), args, job_timeout)

    def _claim_result(self, reply: Any, args: list[Any], job_timeout: float,
                      held: list[bytes] | None = None) -> ClaimResult | None:
        """`held`: the fields read when the job was claimed ahead (a held start replies without them)."""
        token, stamp = args[0], args[2]
        outcome, detail, attempts, flat, raw_key, dropped = reply[:6]
        if held is not None:
            flat = held
        outcome = _text(outcome)
        if len(reply) > 6:  # the queue's length after an `ok` claim.lua
            self._waiting = int(reply[6])
        self._queue_empty = outcome == "empty" or (len(reply) > 6 and self._waiting == 0)
        if outcome == "empty":
            return None
        try:
            job_key = raw_key.decode("utf-8")
        except UnicodeDecodeError:
            # nothing later can name this key as text: set it aside as bad input right now
            self._bury(keys=[self.processing_key, self.dead_key], args=[raw_key, BAD_KEY_REASON, stamp, self.expire_time])
            return ClaimResult("unreadable", raw_key.decode("utf-8", "backslashreplace"), None, _text(detail))
        previous = _text(detail)
        if outcome != "ok":
            return ClaimResult(outcome, job_key, None, previous)
        return self._started(job_key, token, stamp, int(attempts), previous, flat, [n.decode() for n in dropped],
                             job_timeout)

    def _started(self, job_key: str, token: str, stamp: str, attempts: int, previous: str,
                 flat: list[bytes] | tuple[dict[str, str], list[str]], dropped: list[str],
                 job_timeout: float) -> ClaimResult:
        """The claim as the claim step left it: the hash as read (raw, or already decoded), then
        what the claim wrote over it."""
        data, bad = _decode_fields(flat) if isinstance(flat, list) else flat
        for name in dropped:
            data.pop(name, None)
        data.update(status="started", claim=token, updated_by=self.consumer_id, identity_started=self.consumer_id,
                    started_at=stamp, updated_at=stamp, attempts=str(attempts))
        if bad:
            bad = [name for name in bad if name not in _CLAIM_FIELDS]
        job = Claim(key=job_key, token=token, attempts=attempts, previous_status=previous, fields=data,
                    unreadable=bad)
        job.deadline = job.claimed_at + job_timeout
        return ClaimResult("ok", job_key, job, previous)

    # -- while running ----------------------------------------------------------------------
    def update(self, job: Claim, fields: Mapping[str, Any], log_lines: list[str] | None = None) -> int:
        """Fenced HSET plus job-log lines: 1 written, 0 stale (another claim owns it), -1 vanished."""
        data = _flatten({"updated_at": now_iso(), **fields}) if fields else []
        lines = list(log_lines or [])
        return int(self._update(keys=[job.key, keys.job_log(job.key)],
                                args=[job.token, self.log_lines, self.expire_time, len(data), *data, *lines]))

    def append_log(self, job: Claim, lines: list[str]) -> int:
        """Fenced: add lines to the job's capped log list (expires with the job); as `update`."""
        if not lines or self.log_lines <= 0:
            return 1
        return self.update(job, {}, lines)

    def read_log(self, job_key: str) -> list[str]:
        """The job's log lines kept in Redis, oldest first."""
        return self.redis.lrange(keys.job_log(job_key), 0, -1)

    # -- ending -----------------------------------------------------------------------------
    def finish(self, job: Claim, status: str, fields: Mapping[str, Any], log_lines: list[str] | None = None) -> int:
        """Fenced final write: 1 done now, 2 already done by this claim, 0 stale, -1 vanished.

        Pending job-log lines travel in the same round trip; a zip child (fields `parent`,
        `parent_queue` in its hash) is counted by its parent in the same step.
        """
        self._lane.settle()  # the previous final write's reply first: it may hold the next job
        stamp = now_iso()
        elapsed = time.monotonic() - job.claimed_at
        if self.claim_ahead or self.claim_batch > 1:  # how short recent jobs are (claim to final write), a moving average
            self._recent = elapsed if self._recent == float("inf") else self._recent + 0.3 * (elapsed - self._recent)
        # the result fields may override these stamps (or drop them with None)
        flat = _flatten({"updated_at": stamp, "finished_at": stamp, "progress": 100 if status == "done" else None,
                         **fields})
        key_list = [job.key, self.processing_key, self._completed_key, keys.job_log(job.key)]
        lines = list(log_lines or [])
        args = [job.token, self.expire_time, str(status), self.log_lines, stamp, len(flat), *flat, *lines]
        if self.claim_batch > 1:
            return self._finish_in_batch(job, args, elapsed)
        if self.prefetch is not None and self._prefetched is None and self.prefetch():
            return self._finish_and_claim(key_list, args)
        return int(self._finish(keys=key_list, args=args))

    def _give_back_quietly(self) -> None:
        try:
            self.release_all()
        except redis.RedisError:
            pass  # the worker's recovery moves it back later

    def park(self, job: Claim, children_total: int, fields: Mapping[str, Any] | None = None) -> int:
        """Fenced: `status=waiting` until `children_total` children end (zip fan-in); 0 stale, -1 vanished."""
        self.flush()  # buffered final writes go first (a child of this parent may be among them)
        data = {"updated_at": now_iso(), **(fields or {})}
        return int(self._park(keys=[job.key, self.processing_key, self.queue],
                              args=[job.token, children_total, data["updated_at"], *_flatten(data)]))

    def release(self, job: Claim, reason: str = "", status: str = "new") -> str:
        """Fenced: give the job back to the queue head without counting the attempt (shutdown, or
        TF Serving unreachable; `reason` then becomes `last_error`), with `status` ('new'; a batch
        job handed back unrun gets its status before the claim back).

        'released' | 'stale' | 'final' | 'vanished'.
        """
        self.flush()
        return self._requeue(
            keys=[job.key, self.processing_key, self.queue, self.dead_key],
            args=[job.token, "release", self.max_attempts, now_iso(), reason, self.expire_time, status],
        )

    def retry(self, job: Claim, reason: str) -> str:
        """System error: requeue at the tail, or fail and dead-letter when attempts are used up.

        'requeued' | 'dead' | 'stale' | 'final' | 'vanished'.
        """
        self.flush()
        return self._requeue(
            keys=[job.key, self.processing_key, self.queue, self.dead_key],
            args=[job.token, "retry", self.max_attempts, now_iso(), reason, self.expire_time],
        )

    def release_all(self, uncount: bool = False, also: tuple[str, ...] | list[str] = ()) -> int:
        """Move every key left in our processing list back to the queue head, in queue order.

        `uncount`: a Redis outage cut our job short, so a job we had claimed gets its attempt back.
        A job started ahead (`prefetch`) and not run yet gets its attempt back too; jobs held
        ahead were never started, so nothing of theirs was counted. Buffered final writes (batches)
        are sent first; the jobs a batch started and the worker did not run get their attempts
        back, as do those named by `also` (tokens: the supervisor thread names the main broker's).
        """
        self._lane.settle()
        self._flush_quietly()
        started = self._prefetched.job if self._prefetched is not None else None
        tokens = [started.token if started is not None else "", *self.unrun_tokens(), *self._unsent, *also]
        moved = int(self._release_all(keys=[self.processing_key, self.queue],
                                      args=[self.consumer_id if uncount else "", now_iso(), *tokens]))
        self._prefetched = None
        self._held.clear()
        self._batched.clear()
        self._unsent.clear()
        return moved

    def settle(self) -> None:
        """Read the reply of a final write still in flight and send the buffered ones (before
        resetting connections)."""
        self._lane.settle()
        self.flush()

    # -- producing --------------------------------------------------------------------------
    def enqueue(self, key: str, fields: Mapping[str, Any], queue: str | None = None) -> bool:
        """Create job `key` and LPUSH it onto `queue` (default ours); False if it already existed."""
        return enqueue(self.redis, queue or self.queue, key, fields, script=self._enqueue)

    # -- liveness ---------------------------------------------------------------------------
    def heartbeat(self) -> float:
        """Refresh our liveness score; returns the Redis server time."""
        now = self._heartbeat(keys=[self.consumers_key, keys.QUEUES_SET],
                              args=[self.consumer_id, self.heartbeat_ttl, self.queue])
        return float(now)

    def deregister(self) -> None:
        """Clean exit: we hold nothing any more, so leave the live set."""
        self.redis.zrem(self.consumers_key, self.consumer_id)

    def reap(self, lock_ms: int) -> tuple[int, int, int] | None:
        """Recover dead consumers' jobs under a short lock; None if another worker holds it."""
        if not self.redis.set(keys.reaper_lock(self.queue), self.consumer_id, nx=True, px=max(lock_ms, 1)):
            return None
        recovered, dead, reaped = self._reap(
            keys=[self.consumers_key, self.queue, self.dead_key],
            args=[keys.processing_prefix(self.queue), self.max_attempts, now_iso(),
                  _dead_reason(self.max_attempts), self.expire_time],
        )
        return int(recovered), int(dead), int(reaped)


def enqueue(client: redis.Redis, queue: str, key: str, fields: Mapping[str, Any], *, script: Script | None = None) -> bool:
    """Create job `key` with `fields` and LPUSH it onto `queue`, safely retried; False if it existed."""
    flat = [x for name, value in fields.items() for x in (name, str(value))]
    return bool((script or Script(client, "enqueue"))(keys=[key, queue], args=flat))
