"""Write result zips from memory with ISA-L's level-1 deflate (python-isal).

`zipfile` deflates with zlib (level 1 costs ~9 ms for a megapixel labels TIFF, ISA-L ~0.7 ms) and
wants members as files or whole strings it copies. `FastZipWriter` takes bytes-like members
(bytes, memoryview, contiguous numpy arrays), deflates each with `isal_zlib` (raw deflate, the
zip "deflated" method 8) or stores it, and writes a standard archive that `zipfile`, `unzip` and
every other reader open. Members and the archive stay below 4 GiB (no ZIP64): larger input is
refused with a clear error, so callers can fall back to `zipfile`.

The layout follows PKWARE's APPNOTE.TXT (local file header, data, central directory, end of
central directory record), sizes and CRC known up front so no data descriptors are needed.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import Any, BinaryIO

from isal import isal_zlib

STORED, DEFLATED = 0, 8
#: what already-compressed formats end with: stored as they are (deflating them wastes CPU)
STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".zip", ".gz", ".zst", ".npz", ".webp")

_LOCAL = struct.Struct("<4s5H3L2H")      # local file header, APPNOTE 4.3.7
_CENTRAL = struct.Struct("<4s6H3L5H2L")  # central directory file header, APPNOTE 4.3.12
_END = struct.Struct("<4s4H2LH")         # end of central directory record, APPNOTE 4.3.16
_LIMIT = 0xFFFFFFFF
_UTF8_FLAG = 0x800
_VERSION = 20  # 2.0: deflate


class ZipTooLarge(ValueError):
    """A member or the archive would need ZIP64, which this writer does not produce."""


def _dos_time(when: float | None = None) -> tuple[int, int]:
    t = time.localtime(time.time() if when is None else when)
    year = max(1980, t.tm_year)
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


def _as_buffer(data: Any) -> memoryview:
    if isinstance(data, str):
        data = data.encode("utf-8")
    view = memoryview(data)
    if not view.contiguous:
        raise ValueError("zip members must be contiguous buffers (np.ascontiguousarray first)")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def deflate_raw(data: Any, level: int = 1) -> bytes:
    """Raw deflate (no zlib header) of a bytes-like object with ISA-L, level 0-3."""
    return isal_zlib.compress(_as_buffer(data), level, -15)


class FastZipWriter:
    """`with FastZipWriter(path) as zf: zf.writestr(name, data)`; `compress=False` stores.

    Member names are written UTF-8 (the flag is set when they are not ASCII). Duplicate names
    are refused: a result zip with two members of one name is ambiguous to readers.
    """

    def __init__(self, file: str | BinaryIO, level: int = 1) -> None:
        self._own = isinstance(file, (str, bytes)) or hasattr(file, "__fspath__")
        self._fp: BinaryIO = open(file, "wb") if self._own else file  # type: ignore[arg-type]  # noqa: SIM115
        self._offset = 0 if self._own else self._fp.tell()
        self._start = self._offset
        self.level = level
        self._entries: list[bytes] = []
        self._names: set[str] = set()
        self._closed = False

    def writestr(self, name: str, data: Any, *, compress: bool | None = None,
                 date_time: float | None = None) -> int:
        """Add one member from memory; returns its size in the archive. `compress=None` stores
        names ending in STORED_SUFFIXES and deflates the rest."""
        if self._closed:
            raise ValueError("the archive is closed")
        if name in self._names:
            raise ValueError(f"duplicate zip member name {name!r}")
        view = _as_buffer(data)
        if compress is None:
            compress = not name.lower().endswith(STORED_SUFFIXES)
        crc = isal_zlib.crc32(view)
        body: Any = deflate_raw(view, self.level) if compress else view
        method = DEFLATED if compress else STORED
        if compress and len(body) >= len(view):  # incompressible: storing is smaller and faster to read
            body, method = view, STORED
        if len(view) >= _LIMIT or len(body) >= _LIMIT or self._offset - self._start >= _LIMIT:
            raise ZipTooLarge(f"zip member {name!r} needs ZIP64 (4 GiB or more); use zipfile for it")
        raw_name = name.encode("utf-8")
        flags = 0 if raw_name.isascii() else _UTF8_FLAG
        dtime, ddate = _dos_time(date_time)
        header = _LOCAL.pack(b"PK\x03\x04", _VERSION, flags, method, dtime, ddate, crc, len(body), len(view),
                             len(raw_name), 0)
        self._fp.write(header)
        self._fp.write(raw_name)
        self._fp.write(body)
        self._entries.append(_CENTRAL.pack(b"PK\x01\x02", _VERSION, _VERSION, flags, method, dtime, ddate, crc,
                                           len(body), len(view), len(raw_name), 0, 0, 0, 0, 0,
                                           self._offset - self._start) + raw_name)
        self._names.add(name)
        self._offset += len(header) + len(raw_name) + len(body)
        return len(body)

    def write(self, path: str, arcname: str | None = None, *, compress: bool | None = None) -> int:
        """Add a file from disk (read whole: result members are at most a few hundred MB)."""
        import os

        with open(path, "rb") as fh:
            data = fh.read()
        return self.writestr(arcname or os.path.basename(path), data, compress=compress,
                             date_time=os.path.getmtime(path))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        central = b"".join(self._entries)
        cd_offset = self._offset - self._start
        if len(self._entries) >= 0xFFFF or cd_offset + len(central) >= _LIMIT:
            raise ZipTooLarge("the archive needs ZIP64 (65535 members or 4 GiB); use zipfile for it")
        self._fp.write(central)
        self._fp.write(_END.pack(b"PK\x05\x06", 0, 0, len(self._entries), len(self._entries), len(central),
                                 cd_offset, 0))
        if self._own:
            self._fp.close()
        else:
            self._fp.flush()

    def __enter__(self) -> FastZipWriter:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_zip(file: str | BinaryIO, members: Iterable[tuple[str, Any]], level: int = 1) -> None:
    """Write `(name, bytes-like)` members as one archive (the common case in one call)."""
    with FastZipWriter(file, level) as zf:
        for name, data in members:
            zf.writestr(name, data)
