"""A result TIFF's bytes in memory: what `tifffile.imwrite(file, array.astype(dtype))` writes.

Why not that call: for a BytesIO tifffile copies the pixels twice after our astype (`tobytes()`,
then the BytesIO write), ~0.6 ms for a 4 MB label plane in every segmentation and Mesmer job.
Here tifffile writes the header and tags for the shape and dtype with room for the pixels
(`imwrite(shape=, dtype=, returnoffset=True)`), and one numpy cast writes them into that room:
the same bytes (tests/test_tiff_bytes.py compares), ~0.4x of the CPU. Those header bytes depend
only on the shape and dtype (tifffile writes no date unless asked), so they are made once per
(shape, dtype) and copied in front of the pixels: tifffile's ~0.3-0.6 ms of tag building and
zero-filling per file is then paid by the first result of a size only.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=32)
def _frame(shape: tuple[int, ...], dtype: np.dtype) -> tuple[bytes, int, bytes] | None:
    """(the bytes before the pixels, their length, the bytes after) of tifffile's file of
    `shape` and `dtype`, or None when tifffile gives no single place for them."""
    import tifffile

    buffer = io.BytesIO()
    placed = tifffile.imwrite(buffer, shape=shape, dtype=dtype, returnoffset=True)
    size = int(np.prod(shape)) * dtype.itemsize
    if placed is None or placed[1] != size:
        return None
    data = buffer.getbuffer()
    offset = int(placed[0])
    return bytes(data[:offset]), size, bytes(data[offset + size:])


def tiff_bytes(array: np.ndarray, dtype: Any = None) -> memoryview:
    """`tifffile.imwrite(BytesIO, np.ascontiguousarray(array, dtype))`'s bytes (dtype None:
    the array's own), as a view of a buffer holding nothing else (no copy)."""
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    frame = _frame(tuple(array.shape), dtype) if array.size and dtype.isnative and dtype.kind in "uif" else None
    if frame is None:  # nowhere to put them: tifffile's own way
        import tifffile

        buffer = io.BytesIO()
        tifffile.imwrite(buffer, np.ascontiguousarray(array, dtype=dtype))
        return buffer.getbuffer()
    head, size, tail = frame
    out = np.empty(len(head) + size + len(tail), dtype=np.uint8)
    out[:len(head)] = np.frombuffer(head, dtype=np.uint8)
    pixels = out[len(head):len(head) + size].view(dtype).reshape(array.shape)
    np.copyto(pixels, array, casting="unsafe")  # astype's conversion, straight into the file's bytes
    if tail:
        out[len(head) + size:] = np.frombuffer(tail, dtype=np.uint8)
    return memoryview(out)
