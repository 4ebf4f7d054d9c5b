"""A PNG a person can look at: object outlines drawn in red over the (first channel of the) input.

Written as an 8-bit palette PNG with the grey input quantised to 16 levels: enough for an eye
to see the cells under their outlines, and the camera noise of the background then collapses
into one level, and the file is ~10x smaller than at 32 levels. The PNG is framed here and its
rows (filter type 0, the usual choice for palette images) deflated by ISA-L level 1: ~0.4 ms per
megapixel where PIL's zlib level 1 took ~8 ms (this runs for every job, inside the worker's
per-image CPU budget). Chunk layout per the PNG specification (W3C, 2nd ed., sections 5 and 11).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from isal import isal_zlib

from ..deepcell import _native
from . import quantiles

OUTLINE_RGB = (255, 40, 40)
GREY_LEVELS = 16
OUTLINE_INDEX = GREY_LEVELS
PALETTE = [v for i in range(GREY_LEVELS) for v in (round(i * 255 / (GREY_LEVELS - 1)),) * 3] + list(OUTLINE_RGB)


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels on an object's edge (label differs from a 4-neighbour)."""
    edge = np.zeros(labels.shape, dtype=bool)
    diff_y = labels[1:, :] != labels[:-1, :]
    diff_x = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= diff_y
    edge[:-1, :] |= diff_y
    edge[:, 1:] |= diff_x
    edge[:, :-1] |= diff_x
    return edge & (labels > 0)


def indexed(plane01: np.ndarray, labels: np.ndarray, clipped: bool = False) -> np.ndarray:
    """Palette indices (H, W) uint8: grey levels 0..31 from [0, 1], OUTLINE_INDEX on edges.

    `clipped=True` promises the plane is already within [0, 1] (saves a pass).
    """
    return indexed_levels(_grey(plane01 if clipped else np.clip(plane01, 0.0, 1.0)), labels)


def grey_levels(plane: np.ndarray) -> np.ndarray:
    """`indexed(normalize(plane))`'s grey part ((H, W) uint8, no outlines) for any 2-D plane.

    An 8- or 16-bit integer plane (the usual microscope image) takes one table lookup: the
    same float32 steps as `labels.normalize` then `indexed` run on each distinct value once,
    the same percentiles come from the same sample, so every pixel gets the same level as on
    the per-pixel path (tests/test_overlay_png.py compares both) at a fraction of its passes.
    """
    from .labels import normalize

    plane = np.asarray(plane)
    small_ints = plane.ndim == 2 and plane.size and plane.dtype.kind in "ui" and plane.dtype.itemsize <= 2
    if not small_ints or (plane.dtype.kind == "i" and int(plane.min()) < 0):
        shown = normalize(np.ascontiguousarray(plane, dtype=np.float32)[np.newaxis, :, :, np.newaxis])[0, :, :, 0]
        return _grey(shown)
    step = max(1, int(np.sqrt(plane.size / 65536)))  # normalize's sample and percentiles (of its float32 values)
    lo, hi = quantiles.count_percentiles(plane[::step, ::step].ravel(), (1.0, 99.9))
    gather = plane.dtype == np.uint16 and _native.clahe_kernels is not None
    # a level for every uint16 value (each computed alone, so the same as for the values present):
    # the gather then needs neither the plane's maximum nor a bounds check
    top = 65535 if gather else int(plane.max())
    values = np.arange(top + 1, dtype=np.float32)
    table = normalize(values[np.newaxis, np.newaxis, :, np.newaxis], bounds=(lo, hi))[0, 0, :, 0]
    grey = _grey(table)
    if gather:  # CLAHE's value -> bin gather, reading a strided channel in place
        out = np.empty(plane.shape, dtype=np.uint8)
        _native.clahe_kernels.gather_u8(plane, grey, out)  # ~0.4x of np.take
        return out
    plane = np.ascontiguousarray(plane)
    # every value indexes the table (0 <= value <= top): 'clip' then only skips take's bounds
    # checks, half the CPU of the fancy index `table[plane]`, the same bytes
    return np.take(grey, plane, mode="clip")


def _grey(plane01: np.ndarray) -> np.ndarray:
    index = np.empty(plane01.shape, dtype=np.uint8)
    np.multiply(plane01, GREY_LEVELS - 1, out=index, casting="unsafe")
    return index


def indexed_levels(levels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Palette indices from `grey_levels` (rewritten in place): OUTLINE_INDEX on object edges.

    With the C kernels, int32 labels (the watershed's) take `_overlay_kernels.mark_outlines`, one
    pass instead of `outlines`' six boolean passes and the masked copy, the same pixels
    (tests/test_overlay_png.py compares both)."""
    kernels = _native.overlay_kernels
    labels = np.asarray(labels)
    if (kernels is not None and labels.dtype == np.int32 and labels.ndim == 2 and labels.flags.c_contiguous
            and levels.dtype == np.uint8 and levels.shape == labels.shape and levels.flags.c_contiguous
            and levels.flags.writeable):
        kernels.mark_outlines(labels, levels, OUTLINE_INDEX)
        return levels
    np.copyto(levels, OUTLINE_INDEX, where=outlines(labels))  # a masked copy: ~2/3 of a boolean-index store
    return levels


def render(plane01: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) of what the PNG shows (for callers that want an array)."""
    palette = np.asarray(PALETTE, dtype=np.uint8).reshape(-1, 3)
    return palette[indexed(plane01, labels)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    # ISA-L's CRC-32 is zlib's (the same polynomial and value) at a fraction of its CPU on the IDAT
    return struct.pack(">L", len(data)) + kind + data + struct.pack(">L", isal_zlib.crc32(data, zlib.crc32(kind)))


def png_bytes(index: np.ndarray, palette: list[int] | bytes, level: int = 1) -> bytes:
    """An 8-bit palette PNG of `index` (H, W) uint8 with `palette` (r, g, b, r, g, b, ...).

    Each row gets filter byte 0 and the rows go through one ISA-L zlib stream (IDAT).
    """
    index = np.asarray(index)
    if index.ndim != 2 or index.dtype != np.uint8:
        raise ValueError(f"palette PNG needs a 2-D uint8 index, got {index.dtype} {index.shape}")
    height, width = index.shape
    if height < 1 or width < 1:
        raise ValueError(f"a PNG needs at least one pixel, got shape {index.shape}")
    pal = bytes(palette)
    if len(pal) % 3 or not 3 <= len(pal) <= 768:
        raise ValueError("a PNG palette holds 1 to 256 RGB triplets")
    rows = np.empty((height, width + 1), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None
    rows[:, 1:] = index
    ihdr = struct.pack(">2L5B", width, height, 8, 3, 0, 0, 0)  # depth 8, palette, deflate, no interlace
    return b"".join((b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", ihdr), _chunk(b"PLTE", pal),
                     _chunk(b"IDAT", isal_zlib.compress(rows, level, 15)), _chunk(b"IEND", b"")))


def save_png(path: str, plane01: np.ndarray, labels: np.ndarray, clipped: bool = False) -> str:
    """Write the overlay PNG."""
    data = png_bytes(np.ascontiguousarray(indexed(plane01, labels, clipped)), PALETTE)
    with open(path, "wb") as fh:
        fh.write(data)
    return path
