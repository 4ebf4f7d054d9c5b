"""Batches (CLAIM_BATCH > 1), as methods of the `Broker` (a mixin): one script call finishes and
starts several short jobs, so its fixed cost (script set-up, round trip, system calls) is paid
once per batch instead of once per job.

While jobs wait and recent jobs are short, a job's final write (`finish_batch.lua`) also starts up
to CLAIM_BATCH waiting jobs, each with its own fencing token and counted attempt. `claim_next`
hands them out one by one (a job's JOB_TIMEOUT counts from then). The final write of a job
started in a batch is buffered (`finish` returns 1; a stale or vanished reply is logged when it
arrives) while more of its batch remain to run, and sent with the next batch call; it is sent
sooner before anything else changes a job (retry, release, park, release_all, a connection reset),
when the buffer's oldest entry is older than CLAIM_AHEAD_MAX_SECONDS, and when a job ran longer
than that (the worker's supervisor also flushes an old buffer while a long job runs, and once a
job has run GIVE_BACK_AFTER it hands the rest of its batch back to the queue). See
docs/queue-protocol.md ("Batches") for the attempts rule after a SIGKILL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import redis

from ..utils.timestamps import now_iso
from . import keys
from .claims import Claim, ClaimResult, dead_reason

log = logging.getLogger(__name__)

#: Seconds a job of a batch may run before the jobs of its batch waiting behind it go back to the queue.
GIVE_BACK_AFTER = 1.0


class Batches:
    """Needs the broker's claim helpers (`_claim_result`, `_tokens`, `_dead_reason`), its
    `_finish_batch` script, keys, limits and `_give_back_quietly`."""

    claim_batch: int
    claim_ahead_max_seconds: float
    _recent: float
    _job_timeout: float
    _queue_empty: bool
    _waiting: int
    _prefetched: ClaimResult | None
    _finish_batch: Any
    _claim_result: Any
    _tokens: Any
    _give_back_quietly: Any
    prefetch: Any
    queue: str
    processing_key: str
    dead_key: str
    consumer_id: str
    max_attempts: int
    expire_time: int
    _completed_key: str

    def _init_batches(self) -> None:
        #: jobs a batch call started, not handed out yet (claim results, oldest first)
        self._batched: deque[ClaimResult] = deque()
        #: buffered final writes: (job key, token, finish.lua's ARGV), oldest first, and when the
        #: oldest was buffered (monotonic); the lock makes the swap safe from the supervisor thread
        self._buffer: list[tuple[str, str, list[Any]]] = []
        self._buffer_since = float("inf")
        self._buffer_lock = threading.Lock()
        #: tokens of final writes whose batch call failed (unknown whether it ran): release_all gives
        #: those jobs their attempt back (they ran, but their result may be lost: they run again)
        self._unsent: list[str] = []

    def _finish_in_batch(self, job: Claim, finish_args: list[Any], elapsed: float) -> int:
        """`finish` in batch mode: buffer this final write while more of its batch remain to run,
        else send it with the buffer (and start the next batch when the worker claims on)."""
        limit = self.claim_ahead_max_seconds
        short = self._recent < limit
        more = self.prefetch is not None and self.prefetch()
        if (self._batched and short and more and elapsed < limit
                and job.fields.get("claim_batch") == job.token
                and time.monotonic() - self._buffer_since < limit):
            with self._buffer_lock:
                if not self._buffer:
                    self._buffer_since = time.monotonic()
                self._buffer.append((job.key, job.token, finish_args))
            return 1
        starts = 0
        if more and self._prefetched is None and not self._batched:
            # as many as waited at the last look (a trickling queue starts one per call, as without
            # batches: asking for 16 then costs 16 tokens sent and an empty LMOVE for nothing)
            starts = min(self.claim_batch, max(1, self._waiting)) if short else 1
        return self._batch_call(starts, last=(job.key, job.token, finish_args))

    def _hand_out(self, job_timeout: float) -> ClaimResult | None:
        """The oldest job a batch call started (None when the supervisor gave them back meanwhile);
        its deadline counts from now."""
        if self._buffer and time.monotonic() - self._buffer_since >= self.claim_ahead_max_seconds:
            self.flush()
        with self._buffer_lock:
            if not self._batched:
                return None
            claimed = self._batched.popleft()
        job = claimed.job
        if job is not None:
            job.claimed_at = time.monotonic()
            job.deadline = job.claimed_at + job_timeout
        return claimed

    def buffer_due(self) -> float:
        """When the oldest buffered final write must be sent (monotonic; inf when none is)."""
        return self._buffer_since + self.claim_ahead_max_seconds

    def run_due(self, job: Claim) -> float:
        """When `job`, running, has run too long to keep the rest of its batch waiting (monotonic;
        inf when no batch job waits behind it): GIVE_BACK_AFTER seconds, or the short-job bound
        if longer (a job just past the bound costs its batch little; giving 15 jobs back costs 15
        round trips and the claims again)."""
        if not self._batched:
            return float("inf")
        return job.claimed_at + max(GIVE_BACK_AFTER, self.claim_ahead_max_seconds)

    def give_back_unrun(self, via: Any) -> int:
        """The jobs a batch started that wait behind a long one go back to the queue head, in
        queue order, their attempts given back (`via`: the supervisor thread's broker, whose
        connection is free while the main thread runs the long job). Returns how many."""
        with self._buffer_lock:
            taken = [c.job for c in self._batched if c.job is not None]
            self._batched.clear()
        for i, job in enumerate(reversed(taken)):  # each goes to the oldest end: the last first
            try:
                via.release(job, status=job.previous_status)
            except BaseException:  # the rest stay in our list: release_all gives their attempts back
                self._unsent.extend(j.token for j in taken[: len(taken) - i])
                raise
        return len(taken)

    def unrun_tokens(self) -> list[str]:
        """Tokens of the jobs a batch started and the worker has not run (their attempts go back)."""
        return [c.job.token for c in list(self._batched) if c.job is not None]

    def flush(self, via: Any = None) -> None:
        """Send the buffered final writes now (`via`: another broker's connection, e.g. the
        worker's supervisor thread while a long job runs)."""
        if self._buffer:
            self._batch_call(0, via)

    def _take_buffer(self) -> list[tuple[str, str, list[Any]]]:
        with self._buffer_lock:
            entries, self._buffer = self._buffer, []
            self._buffer_since = float("inf")
        return entries

    def _batch_call(self, starts: int, via: Any = None, last: tuple[str, str, list[Any]] | None = None) -> int:
        """One `finish_batch.lua` call: the buffered final writes and `last`, then up to `starts`
        claims. Returns the last final write's reply (the others are logged when stale or vanished)."""
        entries: list[tuple[str, str, list[Any]]] = []
        try:
            entries = self._take_buffer()
            if last is not None:
                entries.append(last)
            done, claims, waiting, tokens, stamp = self._send_batch(entries, starts, via)
        except BaseException:  # unknown whether it ran: release_all gives those jobs their attempt back
            lost = {token for _key, token, _args in entries} | ({last[1]} if last is not None else set())
            self._unsent.extend(lost)
            raise
        for (key, _token, _args), reply in zip(entries[:-1], done):
            if int(reply) <= 0:
                log.warning("%s finished, but %s; result discarded", key,
                            "it vanished" if int(reply) < 0 else "a newer claim owns it")
        if starts:
            self._waiting = int(waiting)
            self._started_batch(claims, tokens, stamp)
        return int(done[-1]) if done else 1

    def _send_batch(self, entries: list[tuple[str, str, list[Any]]], starts: int,
                    via: Any) -> tuple[list[Any], list[Any], int, list[str], str]:
        """The call itself: (finish replies, claim replies, queue length, the claims' tokens, their stamp)."""
        stamp = now_iso()
        tokens = [f"{self._tokens.getrandbits(64):016x}" for _ in range(starts)]
        call_keys = [self.queue, self.processing_key, self.dead_key, self._completed_key]
        call_args: list[Any] = [self.consumer_id, stamp, self.max_attempts, dead_reason(self.max_attempts),
                                self.expire_time, len(entries), starts, *tokens]
        for key, _token, args in entries:
            call_keys += [key, keys.job_log(key)]
            call_args += [len(args), *args]
        script = via._finish_batch if via is not None else self._finish_batch
        done, claims, waiting = script(keys=call_keys, args=call_args, raw=True)
        return done, claims, waiting, tokens, stamp

    def _started_batch(self, claims: list[Any], tokens: list[str], stamp: str) -> None:
        """Queue the jobs a batch call started (and the claim steps' other outcomes) for `claim_next`."""
        ok = sum(1 for reply in claims if reply and reply[0] == b"ok")
        self._queue_empty = False
        failed = False
        for reply, token in zip(claims, tokens):
            if not reply:  # the claim step raised an error: whatever it moved goes back
                failed = True
                break
            outcome = reply[0]
            if outcome == b"empty":
                self._queue_empty = True
                break
            if outcome == b"alone":
                break
            result = self._claim_result(reply[:6], [token, self.consumer_id, stamp], self._job_timeout)
            if result is None:
                continue
            if result.job is not None and ok > 1:
                result.job.fields["claim_batch"] = token
            self._batched.append(result)
        if failed:
            self._give_back_quietly()

    def _flush_quietly(self) -> None:
        """Before a connection reset: a failed flush leaves the jobs to recovery (`_unsent`)."""
        try:
            self.flush()
        except (redis.RedisError, OSError):
            pass
