"""A queue's dead letters (`dead-{queue}`): list, requeue, purge.

Requeue and purge are one Lua step (`lua/dead_letters.lua`), including the zip fan-in
bookkeeping of a requeued child, so a job can never be both dead and waiting.
"""

from __future__ import annotations

from typing import Any

from ..utils.timestamps import now_iso
from . import keys
from .scripts import Script


class DeadLetters:
    """Dead letters of one queue, through the job protocol's own scripts."""

    def __init__(self, client: Any, queue: str) -> None:
        self.redis = client
        self.queue = queue
        self.key = keys.dead(queue)
        self._act = Script(client, "dead_letters")

    def keys(self) -> list[str]:
        """Dead job keys, newest first, each once."""
        return list(dict.fromkeys(self.redis.lrange(self.key, 0, -1)))

    def list(self) -> list[dict[str, Any]]:
        """Every dead job, newest first, with its failure details."""
        names = self.redis.lrange(self.key, 0, -1)
        pipe = self.redis.pipeline(transaction=False)
        for k in names:
            pipe.hmget(k, "status", "failure_type", "attempts", "finished_at", "reason")
        rows = []
        for k, (status, ftype, attempts, finished, reason) in zip(names, pipe.execute()):
            rows.append({"key": k, "status": status or "expired", "failure_type": ftype or "",
                         "attempts": attempts or "", "finished_at": finished or "", "reason": reason or ""})
        return rows

    def requeue(self, only: list[str] | None = None) -> tuple[int, int]:
        """Fresh start on `{queue}` for `only` (default all); (requeued, skipped)."""
        return self._run("requeue", only)

    def purge(self, only: list[str] | None = None) -> tuple[int, int]:
        """Delete `only` (default all): dead-list entries, hashes and logs; (purged, skipped)."""
        return self._run("purge", only)

    def _run(self, mode: str, only: list[str] | None) -> tuple[int, int]:
        targets = only or self.keys()
        if not targets:
            return 0, 0
        moved, dropped = self._act(keys=[self.key, self.queue], args=[now_iso(), mode, keys.job_log(""), *targets])
        return int(moved), int(dropped)
