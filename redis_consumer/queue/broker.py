"""The broker: claim, update, finish, park, requeue, heartbeat and reap, one queue per instance.

All state changes are single Lua steps from `scripts`; this class only names the keys, passes
the arguments and turns replies into Python values. It knows nothing about consumers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from ..utils.timestamps import now_iso
from . import keys, scripts

DEAD_REASON = (
    "The job was abandoned {n} times because the worker processing it stopped responding "
    "(crash or out-of-memory); check the input's size and content before resubmitting."
)


@dataclass
class Job:
    """One claimed job: its key, fencing token and timing."""

    key: str
    token: str
    attempts: int
    previous_status: str
    fields: dict[str, str] = field(default_factory=dict)
    claimed_at: float = field(default_factory=time.monotonic)
    deadline: float = float("inf")

    def time_left(self) -> float:
        """Seconds before the job's deadline (may be negative)."""
        return self.deadline - time.monotonic()


@dataclass(frozen=True)
class ClaimResult:
    """What the claim step found: `ok` gives a Job; the others say why there is none."""

    outcome: str  # ok | missing | wrongtype | final
    key: str
    job: Job | None = None
    detail: str = ""


def _flatten(fields: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        out.append(name)
        out.append(value if isinstance(value, str) else _fmt(value))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


class Broker:
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
        self._claim = client.register_script(scripts.CLAIM)
        self._claim_next = client.register_script(scripts.CLAIM_NEXT)
        self._update = client.register_script(scripts.UPDATE)
        self._finish = client.register_script(scripts.FINISH)
        self._park = client.register_script(scripts.PARK)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._release_all = client.register_script(scripts.RELEASE_ALL)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._reap = client.register_script(scripts.REAP)

    # -- claiming ---------------------------------------------------------------------------
    def pop(self, timeout: float) -> str | None:
        """Block up to `timeout` seconds for the oldest waiting key and move it to our list."""
        return self.blocking.blmove(self.queue, self.processing_key, timeout, "RIGHT", "LEFT")

    def claim(self, key: str, job_timeout: float = float("inf")) -> ClaimResult:
        """The Lua claim step on a key already moved into our processing list."""
        token = secrets.token_hex(8)
        reply = self._claim(keys=[key, self.processing_key, self.dead_key], args=[token, self.consumer_id, now_iso()])
        return self._claim_result(reply, token, job_timeout)

    def try_claim(self, job_timeout: float = float("inf")) -> ClaimResult | None:
        """Move and claim the oldest waiting key in one step; None if the queue is empty."""
        token = secrets.token_hex(8)
        reply = self._claim_next(
            keys=[self.queue, self.processing_key, self.dead_key], args=[token, self.consumer_id, now_iso()]
        )
        if reply[0] == "empty":
            return None
        return self._claim_result(reply, token, job_timeout)

    def claim_next(self, timeout: float, job_timeout: float = float("inf")) -> ClaimResult | None:
        """Claim the oldest job, blocking up to `timeout` seconds (BLMOVE) only if none waits."""
        claimed = self.try_claim(job_timeout)
        if claimed is not None:
            return claimed
        key = self.pop(timeout)
        if key is None:
            return None
        return self.claim(key, job_timeout)

    @staticmethod
    def _claim_result(reply: list, token: str, job_timeout: float) -> ClaimResult:
        outcome, detail, attempts, flat, key = reply
        if outcome != "ok":
            return ClaimResult(outcome, key, None, detail)
        data = dict(zip(flat[::2], flat[1::2]))
        job = Job(key=key, token=token, attempts=int(attempts), previous_status=detail, fields=data)
        job.deadline = job.claimed_at + job_timeout
        return ClaimResult("ok", key, job, detail)

    # -- while running ----------------------------------------------------------------------
    def update(self, job: Job, fields: Mapping[str, Any]) -> bool:
        """Fenced HSET: False when our claim was taken over (we are a zombie)."""
        data = {"updated_at": now_iso(), **fields}
        return bool(self._update(keys=[job.key], args=[job.token, *_flatten(data)]))

    def log(self, job_key: str, lines: list[str] | str, pipe: Any = None) -> None:
        """Append lines to the job's capped log list (expires with the job); one round trip."""
        if self.log_lines <= 0 or not lines:
            return
        lines = [lines] if isinstance(lines, str) else lines
        name = keys.job_log(job_key)
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        pipe.rpush(name, *lines)
        pipe.ltrim(name, -self.log_lines, -1)
        pipe.expire(name, self.expire_time)
        if own:
            pipe.execute()

    # -- ending -----------------------------------------------------------------------------
    def finish(
        self,
        job: Job,
        status: str,
        fields: Mapping[str, Any],
        log_lines: list[str] | None = None,
    ) -> int:
        """Fenced final write: 1 done now, 2 already done by this claim, 0 stale (zombie).

        Pending job-log lines travel in the same round trip; a zip child (fields `parent`,
        `parent_queue` in its hash) is counted by its parent in the same step.
        """
        stamp = now_iso()
        data = {"updated_at": stamp, "finished_at": stamp, "progress": 100 if status == "done" else None, **fields}
        key_list = [job.key, self.processing_key, keys.completed_counter(self.queue), keys.job_log(job.key)]
        flat = _flatten(data)
        lines = list(log_lines or [])
        args = [job.token, self.expire_time, status, self.log_lines, stamp, len(flat), *flat, *lines]
        return int(self._finish(keys=key_list, args=args))

    def park(self, job: Job, children_total: int, fields: Mapping[str, Any] | None = None) -> int:
        """Fenced: set `status=waiting` until `children_total` children end (zip fan-in)."""
        data = {"updated_at": now_iso(), **(fields or {})}
        return int(
            self._park(
                keys=[job.key, self.processing_key, self.queue],
                args=[job.token, children_total, data["updated_at"], *_flatten(data)],
            )
        )

    def release(self, job: Job) -> str:
        """Shutdown: give the job back to the queue head without counting the attempt."""
        return self._requeue(
            keys=[job.key, self.processing_key, self.queue, self.dead_key],
            args=[job.token, "release", self.max_attempts, now_iso(), "", self.expire_time],
        )

    def retry(self, job: Job, reason: str) -> str:
        """System error: requeue at the tail, or fail and dead-letter when attempts are used up."""
        return self._requeue(
            keys=[job.key, self.processing_key, self.queue, self.dead_key],
            args=[job.token, "retry", self.max_attempts, now_iso(), reason, self.expire_time],
        )

    def release_all(self) -> int:
        """Move every key left in our processing list back to the queue head."""
        return int(self._release_all(keys=[self.processing_key, self.queue]))

    # -- liveness ---------------------------------------------------------------------------
    def heartbeat(self) -> float:
        """Refresh our liveness score; returns the Redis server time."""
        now = self._heartbeat(
            keys=[self.consumers_key, keys.QUEUES_SET], args=[self.consumer_id, self.heartbeat_ttl, self.queue]
        )
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
            args=[
                keys.processing_prefix(self.queue),
                self.max_attempts,
                now_iso(),
                DEAD_REASON.format(n=self.max_attempts),
                self.expire_time,
            ],
        )
        return int(recovered), int(dead), int(reaped)
