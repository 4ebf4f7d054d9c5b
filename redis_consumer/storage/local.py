"""A local folder as a bucket (`file:///dir`): the embedded default for laptops and tests.

Copies stream through the kernel (`shutil.copyfile`). A download its caller only reads
(`read_only=True`: the consumers' inputs) is a hard link instead: no bytes move, where a 4 MB
copy into fresh page-cache pages cost a mesmer job ~8 ms of CPU; across file systems it falls
back to the copy. Writes land atomically (temporary file then rename; an upload whose caller gives
the file up, `move=True`, is that rename alone), so a linked download keeps the bytes it had when
the object is replaced. Symlinks that lead outside the root are refused like
`..` keys. There is no signing service for a folder, so signed and public URLs are plain
`file://` URLs.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from urllib.parse import quote

from ..errors import UserError
from ..errors import quote as quote_value
from ..settings import Settings
from .base import DENIED, FULL, MISSING, READ_ONLY, TRANSIENT, StorageClient

_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EIO, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE}


class LocalClient(StorageClient):
    """Objects are files under `root`; keys are relative paths."""

    scheme = "file"

    def __init__(self, url: str, root: str, settings: Settings) -> None:
        super().__init__(url, root, "", settings)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._real_root = os.path.realpath(self.root)

    def _path(self, name: str) -> Path:
        path = self.root / name
        real = os.path.realpath(path)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise UserError(f"The key {quote_value(name)} leads outside the bucket through a link; give a key inside it.")
        return path

    def _stat(self, name: str) -> int | None:
        path = self._path(name)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def _get(self, name: str, dest_path: str, size: int) -> None:
        shutil.copyfile(self._path(name), dest_path)

    def _link(self, name: str, dest_path: str) -> bool:
        source = self._path(name)  # confined: a link inside the root is followed to its file, as a copy would
        try:
            os.unlink(dest_path)
            os.link(source, dest_path)  # follows a symlink (linkat AT_SYMLINK_FOLLOW), like copyfile
        except OSError:  # another file system, protected_hardlinks, a vanished object: copy (or fail) instead
            return False
        return True

    def _put(self, path: str, name: str) -> None:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".part-", dir=target.parent)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _move(self, path: str, name: str) -> bool:
        target = self._path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):  # a link would be moved as a link: copy its file
                return False
            os.chmod(path, 0o644)
            os.replace(path, target)  # atomic, as the copy's final rename
        except OSError:  # another file system, a directory in the way: copy (or fail) instead
            return False
        return True

    def _remove(self, name: str) -> None:
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass

    def _sign(self, name: str, ttl: int) -> str:
        return self._public(name)

    def _public(self, name: str) -> str:
        return "file://" + quote(str(Path(self._real_root) / name))

    def _classify(self, exc: BaseException) -> str | None:
        if isinstance(exc, FileNotFoundError):
            return MISSING
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            return READ_ONLY
        if isinstance(exc, PermissionError):  # EACCES/EPERM: DENIED, or write permission when writing
            return DENIED
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
            return TRANSIENT
        return None

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, OSError) and exc.errno:
            return f"{errno.errorcode.get(exc.errno, exc.errno)}: {os.strerror(exc.errno).lower()}"
        return type(exc).__name__
