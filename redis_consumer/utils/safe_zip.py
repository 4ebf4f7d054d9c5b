"""Open an uploaded zip without trusting it: zip slip, links, bombs and junk are stopped or reported.

The plan is made from the central directory alone (no decompression): entries whose names
escape the folder (`..`, absolute paths, drive letters), links, encrypted entries, nested
archives and non-image files are skipped with a reason the user sees in `failures.json`; too
many entries, too many uncompressed bytes in total, or an entry compressed suspiciously well
stop a zip bomb before the disk fills. Extraction streams each entry with a byte budget.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field

from ..errors import UserError, quote

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
ARCHIVE_EXTENSIONS = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    """One zip member accepted for processing."""

    index: int
    name: str  # the member's name in the archive
    basename: str  # a safe file name (no directories)
    size: int


@dataclass
class Plan:
    """What will be extracted and what was skipped (name, reason)."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def _unsafe_reason(name: str) -> str | None:
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text):
        return "absolute path (skipped for safety)"
    if ".." in text.split("/"):
        return "path leaves the archive folder with '..' (skipped for safety)"
    if "\x00" in text:
        return "file name contains a NUL byte (skipped for safety)"
    return None


def safe_basename(name: str, index: int) -> str:
    """A file name safe for storage keys and Redis keys: no directories, no odd characters."""
    base = posixpath.basename(name.replace("\\", "/")) or f"entry-{index}"
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or f"entry-{index}"
    return base[:120]


def plan(path: str, *, max_entries: int, max_bytes: int, max_ratio: float, display_name: str = "") -> Plan:
    """Decide from the central directory what to extract; UserError when the archive itself is unusable."""
    name = display_name or os.path.basename(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise UserError(f"The file {quote(name)} is not a readable zip archive.") from None
    files = [i for i in infos if not i.is_dir()]
    if len(files) > max_entries:
        raise UserError(
            f"The zip {quote(name)} holds {len(files)} files, more than the limit of {max_entries} (MAX_ZIP_ENTRIES); split it."
        )
    result = Plan()
    total = 0
    for index, info in enumerate(files):
        member = info.filename
        reason = _unsafe_reason(member)
        mode = (info.external_attr >> 16) & 0xFFFF
        lower = member.lower()
        if reason is None and stat.S_ISLNK(mode):
            reason = "symbolic link (skipped for safety)"
        if reason is None and info.flag_bits & 0x1:
            reason = "encrypted entry (cannot be read)"
        if reason is None and (lower.startswith("__macosx/") or posixpath.basename(lower).startswith("._")
                               or posixpath.basename(lower) in (".ds_store", "thumbs.db")):
            reason = "operating-system metadata file (ignored)"
        if reason is None and lower.endswith(ARCHIVE_EXTENSIONS):
            reason = "nested archive (unpack it and upload the images directly)"
        if reason is None and not lower.endswith(IMAGE_EXTENSIONS):
            reason = "not an image (expected .tif, .tiff, .png, .jpg, .jpeg or .npy)"
        if reason is None and info.file_size > 0 and info.compress_size > 0 and info.file_size / info.compress_size > max_ratio:
            reason = (
                f"compressed {info.file_size / info.compress_size:.0f}:1, above the limit of "
                f"{max_ratio:g}:1 (MAX_ZIP_RATIO; possible zip bomb)"
            )
        if reason is None and info.file_size == 0:
            reason = "empty file"
        if reason is not None:
            result.skipped.append({"name": member, "reason": reason})
            continue
        total += info.file_size
        if total > max_bytes:
            raise UserError(
                f"The zip {quote(name)} expands to more than {max_bytes} bytes (MAX_ZIP_BYTES); upload smaller archives."
            )
        result.entries.append(Entry(index=index, name=member, basename=safe_basename(member, index), size=info.file_size))
    return result


def extract(zf: zipfile.ZipFile, entry: Entry, dest_path: str) -> int:
    """Stream one planned entry to `dest_path`, never writing more than its declared size."""
    written = 0
    try:
        with zf.open(entry.name) as src, open(dest_path, "wb") as dst:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > entry.size:
                    raise UserError(f"The zip entry {quote(entry.name)} is larger than its header says.")
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        try:
            os.unlink(dest_path)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # disk trouble is ours, not the user's
        raise UserError(f"The zip entry {quote(entry.name)} is corrupt and could not be extracted.") from None
    return written
