"""Protocol-buffer wire primitives: varints (scalar and vectorised) and field walking.

Protobuf's generic serializer copies a 16 MB tensor several times; framing the few header fields
by hand and pointing numpy at the payload bytes costs one copy on the way out and none on the way
back. Everything here follows the public wire-format spec (tags, varints, length-delimited fields).
"""

from __future__ import annotations

from collections.abc import Iterator
from sys import getrefcount as _getrefcount

import numpy as np

from redis_consumer import idle_memory

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    """Encode one unsigned varint (negative ints as 64-bit two's complement, like int32/int64)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def len_field(field: int, payload: bytes) -> bytes:
    """A complete length-delimited field (small payloads: header building only)."""
    return tag(field, LEN) + varint(len(payload)) + payload


def len_prefix(field: int, length: int) -> bytes:
    """Tag and length of a length-delimited field whose payload follows separately."""
    return tag(field, LEN) + varint(length)


def read_varint(buf, pos: int) -> tuple[int, int]:
    """Decode one varint at `pos`; returns (value, next position)."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def fields(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """Walk the fields of one message: yields (field number, wire type, value or offset, length).

    For VARINT the third item is the value and length is 0; for LEN/I32/I64 it is the payload
    offset inside `buf` and the payload length.
    """
    pos = start
    end = len(buf) if end is None else end
    while pos < end:
        key = buf[pos]
        if key < 0x80:  # one-byte tag: every field number below 16
            pos += 1
        else:
            key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire_type, value, 0
        elif wire_type == LEN:
            length = buf[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated length-delimited field")
            yield number, wire_type, pos, length
            pos += length
        elif wire_type == I32:
            yield number, wire_type, pos, 4
            pos += 4
        elif wire_type == I64:
            yield number, wire_type, pos, 8
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    if pos != end:
        raise ValueError("message overruns its length")


def encode_varints(values: np.ndarray) -> bytes:
    """Vectorised varint encoding of an integer array (signed values sign-extended to 64 bits).

    Builds an (n, max groups) byte table column by column and keeps each value's own groups.
    """
    v = np.asarray(values).astype(np.int64, copy=False).reshape(-1).view(np.uint64)
    if v.size == 0:
        return b""
    top = int(v.max())
    if top < 0x80:  # every value is one byte
        return v.astype(np.uint8).tobytes()
    groups = (top.bit_length() + 6) // 7
    lengths = np.ones(v.size, dtype=np.uint8)
    for k in range(1, groups):
        lengths += v >= np.uint64(1 << (7 * k))
    table = np.empty((v.size, groups), dtype=np.uint8)
    for k in range(groups):
        column = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        column |= (lengths > k + 1).view(np.uint8) << 7
        table[:, k] = column
    return table[np.arange(groups, dtype=np.uint8)[None, :] < lengths[:, None]].tobytes()


def decode_varints(buf, offset: int, length: int) -> np.ndarray:
    """Vectorised decoding of packed varints -> uint64 array (reinterpret for signed types).

    The codec decodes reply fields with protobuf's C parser, which is faster; this is the
    dependency-free reference used in tests.
    """
    b = np.frombuffer(buf, dtype=np.uint8, count=length, offset=offset)
    if length == 0:
        return np.zeros(0, dtype=np.uint64)
    if b[-1] >= 0x80:
        raise ValueError("truncated packed varints")
    ends = np.flatnonzero(b < 0x80)
    if ends.size == length:  # every value < 128: one byte each
        return b.astype(np.uint64)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if lengths.max() > 10:
        raise ValueError("malformed varint")
    out = (b[starts] & 0x7F).astype(np.uint64)
    for k in range(1, int(lengths.max())):
        idx = np.flatnonzero(lengths > k)
        out[idx] |= (b[starts[idx] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
    return out


def fresh_bytes(size: int) -> tuple[bytes, np.ndarray]:
    """A new, uninitialised `bytes` of `size` and a writable uint8 view of its buffer.

    gRPC only sends `bytes`; filling a private bytes object in place lets a request be written
    once (tiles cut straight into it) instead of assembled and then joined. The object must not be
    shared, hashed or used as a key until it is complete.
    """
    if size < 2:  # CPython caches bytes of length 0 and 1: never write into those
        return bytes(size), np.zeros(size, dtype=np.uint8)
    data = _capi()[0](None, size)
    return data, _writable_view(data)


_CAPI: tuple | None = None


def _capi() -> tuple:
    """(PyBytes_FromStringAndSize, PyBytes_AsString) through ctypes, set up once."""
    global _CAPI
    if _CAPI is None:
        import ctypes

        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
        address = ctypes.pythonapi.PyBytes_AsString
        address.restype, address.argtypes = ctypes.c_void_p, (ctypes.py_object,)
        _CAPI = (new, address, ctypes.c_ubyte)
    return _CAPI


class BytesPool:
    """Reuses big private `bytes` once nobody else holds them: warm pages, no fresh page faults.

    A 64 MB request built in a fresh allocation pays ~16k page faults (mmap'd by malloc, zeroed
    by the kernel, then unmapped on free): several times the copy itself. `take(size)` returns a
    pooled object of exactly `size` whose only references are the pool's, else a fresh one it
    keeps for next time. Ownership is checked with the reference count, so a request still held
    by gRPC, a caller, a memoryview or a numpy view is never handed out again.
    Buffers under `min_size` are not pooled (malloc serves those from warm heap memory).
    """

    def __init__(self, min_size: int = 1 << 20, per_size: int = 4, max_bytes: int = 512 << 20) -> None:
        import threading

        self.min_size, self.per_size, self.max_bytes = min_size, per_size, max_bytes
        self._free: dict[int, list[_Entry]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def take(self, size: int) -> tuple[bytes, np.ndarray]:
        """A private `bytes` of `size` (contents undefined) and a writable uint8 view of it."""
        if size < self.min_size:
            return fresh_bytes(size)
        with self._lock:
            for entry in self._free.get(size, ()):
                if _holders(entry) == entry.idle:  # only the pool holds the bytes and its view
                    self.hits += 1
                    entry.hash_word.value = -1  # a reused buffer never carries its old contents' hash
                    return entry.data, entry.view
            self.misses += 1
            entry = _Entry(*fresh_bytes(size))  # no other names may hold the bytes or view here
            bucket = self._free.setdefault(size, [])
            if len(bucket) < self.per_size and self._bytes + size <= self.max_bytes:
                entry.idle = _holders(entry)  # reference counts when nobody else holds them
                bucket.append(entry)
                self._bytes += size
            return entry.data, entry.view

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._bytes = 0


class _Entry:
    """One pooled buffer: the bytes, its writable view, their idle reference counts, and the
    bytes object's cached-hash word (`ob_shash`, just before its characters) as a ctypes value."""

    __slots__ = ("data", "hash_word", "idle", "view")

    def __init__(self, data: bytes, view: np.ndarray) -> None:
        import ctypes

        self.data, self.view, self.idle = data, view, (0, 0, 0)
        # from_address keeps no reference, so the counts stay the pool's alone
        self.hash_word = ctypes.c_ssize_t.from_address(_capi()[1](data) - ctypes.sizeof(ctypes.c_ssize_t))


def _holders(entry: _Entry) -> tuple[int, int, int]:
    """Reference counts of a pooled bytes object, its view and the view's base (a caller's
    slice or reshape of the view references the view itself)."""
    view = entry.view
    return _getrefcount(entry.data), _getrefcount(view), _getrefcount(view.base)


def _writable_view(data: bytes) -> np.ndarray:
    _, address, ubyte = _capi()
    raw = (ubyte * len(data)).from_address(address(data))
    raw._owner = data  # the view keeps the bytes alive (and counted as in use by BytesPool)
    return np.ctypeslib.as_array(raw)


#: The process's pool for predict requests (client) and replies (dev server); an idle worker
#: empties it before it hands freed heap back to the OS (redis_consumer/idle_memory.py).
POOL = BytesPool()
idle_memory.register(POOL.clear)


def join_chunks(chunks: list, total: int | None = None, pool: BytesPool | None = POOL) -> bytes:
    """`b"".join(chunks)`, written into a pooled buffer when the message is big."""
    if total is None:
        total = sum(len(c) if not isinstance(c, memoryview) else c.nbytes for c in chunks)
    if pool is None or total < pool.min_size:
        return b"".join(chunks)
    data, view = pool.take(total)
    pos = 0
    for chunk in chunks:
        if not len(chunk):
            continue
        part = np.frombuffer(chunk, dtype=np.uint8)
        view[pos:pos + part.size] = part
        pos += part.size
    if pos != total:
        raise ValueError(f"chunks hold {pos} bytes, expected {total}")
    return data
