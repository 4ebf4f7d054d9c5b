"""Copy members from one zip into another without decompressing them (zip fan-in).

Merging a thousand children's result zips by inflating and re-deflating every member costs the
parent most of its fan-in time; the compressed bytes, CRC and sizes can simply be carried over
under a new name. `zipfile` has no public API for this, so this module writes the local header
and the raw bytes itself, exactly as `ZipFile.mkdir` does for directory entries, and falls back
to an ordinary decompress/recompress copy for anything unusual (encryption, data descriptors on
non-seekable sources, an unexpected Python zipfile layout).
"""

from __future__ import annotations

import shutil
import struct
import zipfile

from ..errors import quote

_CHUNK = 1 << 20


def _data_offset(zin: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Where the member's compressed bytes start (after its local header)."""
    zin.fp.seek(info.header_offset)
    header = zin.fp.read(zipfile.sizeFileHeader)
    fields = struct.unpack(zipfile.structFileHeader, header)
    if fields[zipfile._FH_SIGNATURE] != zipfile.stringFileHeader:
        raise zipfile.BadZipFile(f"bad local header for {quote(info.filename)}")
    return (info.header_offset + zipfile.sizeFileHeader + fields[zipfile._FH_FILENAME_LENGTH]
            + fields[zipfile._FH_EXTRA_FIELD_LENGTH])


def copy_raw(zin: zipfile.ZipFile, info: zipfile.ZipInfo, out: zipfile.ZipFile, arcname: str) -> None:
    """Append `info` from `zin` to `out` as `arcname`, compressed bytes unchanged."""
    if info.flag_bits & 0x1 or not hasattr(out, "start_dir") or not hasattr(zin, "fp"):
        _copy_slow(zin, info, out, arcname)
        return
    new = zipfile.ZipInfo(arcname, info.date_time)
    new.compress_type = info.compress_type
    new.CRC = info.CRC
    new.compress_size = info.compress_size
    new.file_size = info.file_size
    new.external_attr = info.external_attr
    new.flag_bits = info.flag_bits & 0x0800  # keep only the UTF-8 name flag; sizes are in the header
    offset = _data_offset(zin, info)
    zip64 = new.file_size > zipfile.ZIP64_LIMIT or new.compress_size > zipfile.ZIP64_LIMIT
    with out._lock:
        if out._writing:
            raise ValueError("another member of the output zip is still open for writing")
        out.fp.seek(out.start_dir)
        new.header_offset = out.fp.tell()
        out._writecheck(new)
        out._didModify = True
        out.fp.write(new.FileHeader(zip64))
        zin.fp.seek(offset)
        left = info.compress_size
        while left > 0:
            chunk = zin.fp.read(min(_CHUNK, left))
            if not chunk:
                raise zipfile.BadZipFile(f"{quote(info.filename)} is truncated")
            out.fp.write(chunk)
            left -= len(chunk)
        out.filelist.append(new)
        out.NameToInfo[arcname] = new
        out.start_dir = out.fp.tell()


def _copy_slow(zin: zipfile.ZipFile, info: zipfile.ZipInfo, out: zipfile.ZipFile, arcname: str) -> None:
    target = zipfile.ZipInfo(arcname, info.date_time)
    target.compress_type = info.compress_type
    with zin.open(info) as src, out.open(target, "w") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)
