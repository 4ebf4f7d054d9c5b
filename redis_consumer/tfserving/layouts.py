"""Read a reply laid out like one read before without walking its fields again.

A worker gets the same few reply shapes over and over: the same outputs, dtypes, shapes and
model spec, so every byte outside the tensor payloads is identical from one reply to the next.
The first reply of a shape is parsed field by field (`messages`); if every output came back as a
view into the reply, its layout is kept: the bytes between the payloads and where each payload
sits. A later reply of the same length whose non-payload bytes match exactly is the same message
with other values, so its outputs are the same views at the same offsets (a few `startswith`
checks instead of a walk through ~20 fields: ~1 us instead of ~5 per reply).

Only payloads the field walk reads as opaque bytes qualify (`tensor_content`, packed float,
double and complex); varint-encoded values, bool, strings and widened bfloat16 are not views,
so replies holding them always take the full parse.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .wire import _capi

#: reply length -> layouts of that length (newest first); cleared when it grows past _MAX
_LAYOUTS: dict[int, tuple[_Layout, ...]] = {}
_MAX = 64
_PER_LENGTH = 4


class _Layout:
    """The non-payload bytes of one reply (at their offsets) and each output's view."""

    __slots__ = ("extra", "literals", "outputs")

    def __init__(self, literals: list[tuple[int, bytes]], outputs: list[tuple[str, np.dtype, tuple, int]],
                 extra: Any) -> None:
        self.literals, self.outputs, self.extra = literals, outputs, extra

    def read(self, buf: bytes) -> tuple[dict[str, np.ndarray], Any] | None:
        for pos, literal in self.literals:
            if not buf.startswith(literal, pos):
                return None
        return ({name: np.ndarray(shape, dtype, buffer=buf, offset=offset)
                 for name, dtype, shape, offset in self.outputs}, self.extra)


def read(buf: Any) -> tuple[dict[str, np.ndarray], Any] | None:
    """(outputs, extra) of a reply laid out like a learned one, else None."""
    if type(buf) is not bytes:
        return None
    for layout in _LAYOUTS.get(len(buf), ()):
        found = layout.read(buf)
        if found is not None:
            return found
    return None


def learn(buf: Any, outputs: dict[str, np.ndarray], extra: Any) -> None:
    """Keep the layout of a reply just parsed in full, when every output is a view into it."""
    if type(buf) is not bytes or not outputs:
        return
    base = _capi()[1](buf)
    placed = []
    for name, arr in outputs.items():
        if type(arr) is not np.ndarray or not arr.size or arr.dtype.kind not in "fciu" or not arr.flags.c_contiguous:
            return
        offset = arr.__array_interface__["data"][0] - base
        if offset < 0 or offset + arr.nbytes > len(buf):
            return  # decoded into new memory (varints, widened values): not a view
        placed.append((offset, offset + arr.nbytes, name, arr.dtype, arr.shape))
    placed.sort()
    literals, pos = [], 0
    for start, end, *_ in placed:
        if start < pos:
            return  # overlapping views: not a layout a field walk produces
        literals.append((pos, bytes(buf[pos:start])))
        pos = end
    literals.append((pos, bytes(buf[pos:])))
    layout = _Layout([lit for lit in literals if lit[1]], [(n, d, s, o) for o, _, n, d, s in placed], extra)
    if len(_LAYOUTS) >= _MAX:
        _LAYOUTS.clear()
    _LAYOUTS[len(buf)] = (layout,) + _LAYOUTS.get(len(buf), ())[:_PER_LENGTH - 1]
