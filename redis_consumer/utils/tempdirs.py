"""Per-job scratch folders, removed off the job's critical path.

Freeing disk blocks can be slow (ext4 with `discard`, network volumes: milliseconds per file),
and a zip fan-in touches thousands of files; so finished jobs hand their scratch folder to one
background thread instead of deleting it before their final write. Whatever is still queued at
exit is removed by an atexit hook.
"""

from __future__ import annotations

import atexit
import queue
import shutil
import tempfile
import threading

_PENDING: queue.SimpleQueue[str | None] = queue.SimpleQueue()
_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None


def make(prefix: str = "rc-job-") -> str:
    """A new private scratch folder."""
    return tempfile.mkdtemp(prefix=prefix)


def _drain() -> None:
    while True:
        path = _PENDING.get()
        if path is None:
            return
        shutil.rmtree(path, ignore_errors=True)


def remove_later(path: str) -> None:
    """Delete `path` (recursively) on the background thread."""
    global _THREAD
    with _LOCK:
        if _THREAD is None or not _THREAD.is_alive():
            _THREAD = threading.Thread(target=_drain, name="scratch-cleanup", daemon=True)
            _THREAD.start()
    _PENDING.put(path)


@atexit.register
def _flush() -> None:
    while True:
        try:
            path = _PENDING.get_nowait()
        except queue.Empty:
            return
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
