"""Per-job scratch folders, removed off the job's critical path, and swept when a worker died.

Freeing disk blocks can be slow (ext4 with `discard`, network volumes: milliseconds per file),
and a zip fan-in touches thousands of files; so finished jobs hand their scratch folder to one
background thread instead of deleting it before their final write. Whatever is still queued at
exit is removed by an atexit hook.

A SIGKILLed or OOM-killed worker never gets to remove its folders, and the chart keeps TMPDIR in
an emptyDir that outlives container restarts. So each folder holds a lock file that its worker
keeps `flock`ed while the folder exists; the kernel drops the lock when the process dies, however
it dies. `sweep()` (run at worker start) removes folders whose lock it can take, i.e. whose owner
is gone, and never one a live worker in the same pod holds. Process ids are not used: after a
container restart the new worker often has the dead one's pid.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: Prefixes of the folders `make` creates (and so the only ones `sweep` may remove).
PREFIXES = ("rc-job-", "rc-zip-", "rc-zipin-")
LOCK_NAME = ".rc-owner.lock"

_PENDING: queue.SimpleQueue[str | None] = queue.SimpleQueue()
_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None
_HELD: dict[str, int] = {}  # folder -> fd of its flocked lock file


def make(prefix: str = "rc-job-") -> str:
    """A new private scratch folder, locked by this process until it is removed."""
    path = tempfile.mkdtemp(prefix=prefix)
    fd = os.open(os.path.join(path, LOCK_NAME), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: nobody else can hold it
    os.write(fd, f"{os.getpid()}\n".encode())  # for people looking at TMPDIR; sweep never trusts it
    with _LOCK:
        _HELD[path] = fd
    return path


def _remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _LOCK:
        fd = _HELD.pop(path, None)
    if fd is not None:
        os.close(fd)  # only now: a half-removed folder stays ours until it is gone


def _drain() -> None:
    while True:
        path = _PENDING.get()
        if path is None:
            return
        _remove(path)


def remove_later(path: str) -> None:
    """Delete `path` (recursively) on the background thread."""
    global _THREAD
    with _LOCK:
        if _THREAD is None or not _THREAD.is_alive():
            _THREAD = threading.Thread(target=_drain, name="scratch-cleanup", daemon=True)
            _THREAD.start()
    _PENDING.put(path)



@contextlib.contextmanager
def scratch(prefix: str = "rc-job-") -> Iterator[str]:
    """A job's scratch folder (`make`) for the length of a `with` block, then `remove_later`."""
    path = make(prefix)
    try:
        yield path
    finally:
        remove_later(path)

def sweep(root: str | None = None, min_age: float = 3600.0) -> list[str]:
    """Remove scratch folders in `root` (default TMPDIR) left by workers that are gone.

    A folder is stale when its lock file can be locked (its owner died), or, lacking a lock file
    (made by an older version, or a worker killed between creating it and locking it), when it
    is older than `min_age` seconds. Other users' folders and anything else in TMPDIR are left
    alone. Returns the folders removed.
    """
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    uid = os.getuid()
    with os.scandir(root) as entries:
        candidates = [e for e in entries if e.name.startswith(PREFIXES)]
    for entry in candidates:
        try:
            info = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or info.st_uid != uid:
                continue
            if _stale(entry.path, info.st_mtime, min_age):
                removed.append(entry.path)
        except OSError as exc:  # vanished meanwhile, or not ours to touch: never stop a worker
            log.debug("scratch sweep skipped %s (%s)", entry.path, exc)
    return removed


def _stale(path: str, mtime: float, min_age: float) -> bool:
    """Remove `path` if its owner is gone (holding its lock while removing it); True if removed."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        if time.time() - mtime < min_age:
            return False  # maybe a worker between mkdtemp and its lock
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live worker (this one included) holds it
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)


@atexit.register
def _flush() -> None:
    while True:
        try:
            path = _PENDING.get_nowait()
        except queue.Empty:
            return
        if path is not None:
            _remove(path)
