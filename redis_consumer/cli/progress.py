"""Waiting for a set of jobs with a live progress bar (done, failed, rate, ETA).

Used by `submit --wait` and `demo`. Job statuses are read with one pipelined HMGET per
refresh, so watching thousands of jobs costs one round trip per tick.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ..queue.keys import FINAL_STATUSES
from .common import human_seconds


class ProgressBar:
    """`[#####.....] 12/20 done 1 failed 3.2 jobs/s ETA 3s` on one refreshed line (or plain lines off a tty)."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30, label: str = "jobs") -> None:
        self.total = max(total, 0)
        self.stream = stream or sys.stderr
        self.width = width
        self.label = label
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_line = ""
        self._last_print = 0.0

    def render(self, done: int, failed: int, running: int = 0) -> str:
        ended = done + failed
        frac = ended / self.total if self.total else 1.0
        filled = round(frac * self.width)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = ended / elapsed
        eta = (self.total - ended) / rate if rate > 0 else None
        bar = "#" * filled + "." * (self.width - filled)
        return (
            f"[{bar}] {ended}/{self.total} {self.label}: {done} done, {failed} failed, {running} running, "
            f"{rate:.1f}/s, ETA {human_seconds(eta) if ended < self.total else '0s'}"
        )

    def update(self, done: int, failed: int, running: int = 0) -> None:
        line = self.render(done, failed, running)
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last_line)))
            self.stream.flush()
        elif line.split(",")[0] != self._last_line.split(",")[0] or now - self._last_print > 5:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = now
        self._last_line = line

    def close(self) -> None:
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


def statuses(client: Any, keys: Sequence[str]) -> dict[str, str]:
    """Current `status` of every key (`missing` when the hash is gone)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "status")
    return {key: (value if value is not None else "missing") for key, value in zip(keys, pipe.execute())}


def wait_for_jobs(
    client: Any,
    keys: Sequence[str],
    *,
    timeout: float | None = None,
    interval: float = 0.25,
    bar: ProgressBar | None = None,
    check: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Poll until every job is final (or missing), or `timeout` passes; returns the last statuses.

    `check` runs on every tick (the demo uses it to stop at once when a worker dies).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            current = statuses(client, keys)
            done = sum(1 for s in current.values() if s == "done")
            failed = sum(1 for s in current.values() if s in ("failed", "missing"))
            running = sum(1 for s in current.values() if s not in FINAL_STATUSES and s not in ("new", "missing"))
            if bar is not None:
                bar.update(done, failed, running)
            if done + failed == len(keys):
                return current
            if deadline is not None and time.monotonic() >= deadline:
                return current
            if check is not None:
                check()
            time.sleep(interval)
    finally:
        if bar is not None:
            bar.close()
