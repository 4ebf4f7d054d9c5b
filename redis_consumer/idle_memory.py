"""Give the heap back to the OS when the worker goes idle (glibc `malloc_trim`), never while busy.

The image and the chart ship glibc settings that keep freed heap (MALLOC_TRIM_THRESHOLD_ 512 MB,
MALLOC_TOP_PAD_ 64 MB, MALLOC_MMAP_THRESHOLD_ 256 MiB; docs/operations.md), so a busy worker
reuses warm pages instead of faulting in fresh ones for every image. Kept while idle, those pages
are ~10 MB of a worker's RSS after one small kiosk job and far more after a large one.

`went_idle()` is called where the worker is about to block on an empty queue (the worker never
gets there while a next job waits, so the busy path keeps its warm heap). If the resident set
grew by `GROWTH_BYTES` since the last trim (one read of /proc/self/statm, ~10 µs: a worker of
small jobs pays nothing more), it first runs what was `register()`ed: the predict buffer pool
kept warm for the next job (`tfserving.wire.POOL`, up to 512 MB) is emptied, and a DeepCell
consumer drops the last job's labels (kept until the next job began: 4 MB after a 1024x1024
kiosk job); then it calls `malloc_trim(0)`, which returns the free pages of every arena (1-4 ms
here).
The first job after an idle spell pays the page faults the busy path avoids. Anything but glibc
on Linux (musl, macOS) makes the trim a no-op. Not returned: the top of glibc's second arena
(MALLOC_ARENA_MAX=2; where gRPC's threads put the reply bytes), which malloc_trim leaves alone:
in 2 of 7 runs after a 1024x1024 kiosk job it held ~28 MB.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Growth of the resident set since the last trim that makes the next idle moment trim.
GROWTH_BYTES = 4 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: Called before each trim: what keeps memory for a next job or from the last one (`register`).
_RELEASERS: list[Callable[[], object]] = []


def register(release: Callable[[], object]) -> None:
    """Have `release()` (drop a cache, or the last job's leftovers) run when an idle worker trims.

    A bound method is held weakly: registering keeps no consumer alive."""
    if getattr(release, "__self__", None) is None:
        _RELEASERS.append(release)
        return
    method = weakref.WeakMethod(release)  # type: ignore[arg-type]

    def call() -> None:
        bound = method()
        if bound is None:
            with contextlib.suppress(ValueError):
                _RELEASERS.remove(call)
        else:
            bound()

    _RELEASERS.append(call)


def resident_bytes() -> int | None:
    """This process's resident set in bytes, or None where /proc is not there."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _glibc_trim() -> Callable[[], object] | None:
    """`malloc_trim(0)` of the C library this process runs, or None if it has none (not glibc)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class IdleTrim:
    """Trims once per idle moment that follows enough growth; `trim`/`resident` are injectable."""

    def __init__(self, trim: Callable[[], object] | None, resident: Callable[[], int | None] = resident_bytes,
                 growth: int = GROWTH_BYTES) -> None:
        self.trim, self.resident, self.growth = trim, resident, growth
        self.after_last: int | None = None  # resident bytes right after the last trim
        self.trims = 0

    def went_idle(self) -> bool:
        """Trim if the resident set grew enough since the last time; True if it trimmed."""
        if self.trim is None:
            return False
        now = self.resident()
        if now is None or (self.after_last is not None and now - self.after_last < self.growth):
            return False
        for release in tuple(_RELEASERS):
            try:
                release()
            except Exception:  # a cache that failed to let go keeps its memory, nothing more
                log.debug("idle release %r failed", release, exc_info=True)
        try:
            self.trim()
        except Exception:  # memory housekeeping must never stop the worker
            log.debug("malloc_trim failed; not trying again", exc_info=True)
            self.trim = None
            return False
        self.trims += 1
        self.after_last = self.resident()
        return True


_PROCESS: IdleTrim | None = None


def went_idle(enabled: bool) -> bool:
    """The worker is about to wait on an empty queue: trim the heap if it grew (IDLE_MALLOC_TRIM)."""
    global _PROCESS
    if not enabled:
        return False
    if _PROCESS is None:
        _PROCESS = IdleTrim(_glibc_trim())
    return _PROCESS.went_idle()
