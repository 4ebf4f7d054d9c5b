"""Overlapping tiles at the model's fixed size and the spline-blended untiling.

Semantics of deepcell-toolbox 0.12.1 `deepcell_toolbox/utils.py`: `tile_image` L151-273 (stride
`min(2*ceil(0.75*T/2), T)`, tile count, symmetric padding, last tile flush with the padded edge,
per-tile overlap pairs), `spline_window`/`window_2D` L276-328 (triangle-based squared spline, not
normalised) and `untile_image` L331-394 (float64 canvas, weighted sum only when
32 <= T < padded size on both axes and stride_ratio >= 0.5, otherwise last tile wins; cast to
the tiles' dtype, pads cropped). The small-image branch is deepcell-tf
`deepcell/applications/application.py:151-193` and L226-258.

The toolbox never divides by the summed weights, and its spline is scaled by its largest sample
(which sits half a pixel off the peak), so on an overlap of k pixels the two halves add up to
1/max = 1 + ~1/(2k^2), not one: an identity model comes back 1.2e-4 brighter on the overlap
strips at 256-pixel tiles (4.9e-4 at 128). `untile(exact=True)`, the default, leaves out that
scaling, so the halves add up to one and an identity model gets its image back to float32
rounding; `exact=False` is the toolbox bit for bit. Both are checked in
tests/test_deepcell_tiling.py.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from redis_consumer.deepcell import _native

#: shape -> an array of that shape to cut tiles into, or None (tile_image makes its own)
Room = Callable[[tuple[int, ...]], "np.ndarray | None"]

MIN_TILE_SIZE = 32
MIN_STRIDE_RATIO = 0.5


@dataclass
class Tiling:
    """How an image was cut: enough to put any head of the model's output back together."""

    padded_shape: tuple[int, int, int]   # (batch, x, y) of the padded image
    tile_size: tuple[int, int]
    stride: tuple[int, int]
    stride_ratio: float
    pad_x: tuple[int, int]
    pad_y: tuple[int, int]
    small: bool = False                  # the application's "pad only, one tile per item" branch
    batches: list[int] = field(default_factory=list)
    x_spans: list[tuple[int, int]] = field(default_factory=list)
    y_spans: list[tuple[int, int]] = field(default_factory=list)
    overlaps_x: list[tuple[int, int]] = field(default_factory=list)
    overlaps_y: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_tiles(self) -> int:
        return self.padded_shape[0] if self.small else len(self.batches)


def _stride(tile: int, ratio: float) -> int:
    return min(math.ceil(ratio * tile / 2.0) * 2, tile)


def _axis_plan(length: int, tile: int, stride: int) -> tuple[int, tuple[int, int]]:
    """Tiles along one axis and the (low, high) padding that makes them fit exactly."""
    count = max(math.ceil((length - tile) / stride + 1), 1)
    overlap = tile + stride * (count - 1) - length
    return count, (math.ceil(overlap / 2), math.floor(overlap / 2))


def _axis_tiles(count: int, tile: int, stride: int, padded: int) -> tuple[list, list]:
    """(start, end) spans and (left, right) overlaps of each tile along one axis."""
    spans, overlaps = [], []
    for i in range(count):
        start = i * stride if i != count - 1 else padded - tile
        end = start + tile
        if i == 0:
            overlap = (0, tile - stride)
        elif i == count - 2:
            overlap = (tile - stride, tile - padded + end)
        elif i == count - 1:
            overlap = ((i - 1) * stride + tile - start, 0)
        else:
            overlap = (tile - stride, tile - stride)
        spans.append((start, end))
        overlaps.append(overlap)
    return spans, overlaps


def tile_image(image: np.ndarray, tile_shape: tuple[int, int], stride_ratio: float = 0.75,
               pad_mode: str = "constant", room: Room | None = None) -> tuple[np.ndarray, Tiling]:
    """Cut a (B, X, Y, C) image into (N, Tx, Ty, C) overlapping tiles (batch, then x, then y).

    `room(shape)`, when given, may return the array to cut the tiles into (e.g. the input of a
    Predict request's bytes, so the tiles are written once, where gRPC sends them from);
    values are cast to its dtype as they are copied. None: a new array of the image's dtype."""
    if image.ndim != 4:
        raise ValueError(f"expected a (batch, x, y, channel) image, got shape {image.shape}")
    tx, ty = int(tile_shape[0]), int(tile_shape[1])
    sx, sy = _stride(tx, stride_ratio), _stride(ty, stride_ratio)
    nx, pad_x = _axis_plan(image.shape[1], tx, sx)
    ny, pad_y = _axis_plan(image.shape[2], ty, sy)
    padded = np.pad(image, ((0, 0), pad_x, pad_y, (0, 0)), mode=pad_mode) if any(pad_x + pad_y) else image
    xs, oxs = _axis_tiles(nx, tx, sx, padded.shape[1])
    ys, oys = _axis_tiles(ny, ty, sy, padded.shape[2])
    info = Tiling(padded.shape[:3], (tx, ty), (sx, sy), stride_ratio, pad_x, pad_y)
    shape = (image.shape[0] * nx * ny, tx, ty, image.shape[3])
    tiles = room(shape) if room is not None else None
    if tiles is None or tiles.shape != shape:
        tiles = np.empty(shape, dtype=image.dtype)
    n = 0
    for b in range(image.shape[0]):
        for (x0, x1), ox in zip(xs, oxs):
            for (y0, y1), oy in zip(ys, oys):
                tiles[n] = padded[b, x0:x1, y0:y1]
                info.batches.append(b)
                info.x_spans.append((x0, x1))
                info.y_spans.append((y0, y1))
                info.overlaps_x.append(ox)
                info.overlaps_y.append(oy)
                n += 1
    return tiles, info


def tile_input(image: np.ndarray, tile_shape: tuple[int, int], pad_mode: str = "constant",
               stride_ratio: float = 0.75, room: Room | None = None) -> tuple[np.ndarray, Tiling]:
    """The application's tiling: reflect-pad an image smaller than the tile, else tile_image
    (cutting into `room`'s array when it gives one).

    Faithful quirk: when either axis is smaller than the tile, both axes are padded by the
    absolute size difference, so an axis already longer than the tile grows further and the
    "tiles" are then not of the model's size.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (batch, x, y, channel) image, got shape {image.shape}")
    dx, dy = image.shape[1] - tile_shape[0], image.shape[2] - tile_shape[1]
    if dx < 0 or dy < 0:
        dx, dy = abs(dx), abs(dy)
        pad_x = (dx // 2, dx // 2 + dx % 2)
        pad_y = (dy // 2, dy // 2 + dy % 2)
        tiles = np.pad(image, ((0, 0), pad_x, pad_y, (0, 0)), mode="reflect")
        info = Tiling(tiles.shape[:3], tuple(tiles.shape[1:3]), tuple(tiles.shape[1:3]),
                      stride_ratio, pad_x, pad_y, small=True)
        return tiles, info
    return tile_image(image, tile_shape, stride_ratio=stride_ratio, pad_mode=pad_mode, room=room)


def _triang(size: int) -> np.ndarray:
    """The symmetric triangular window (`scipy.signal.windows.triang`, equal values; tested).

    Written out because importing `scipy.signal` costs a worker ~1 s and ~50 MB at start-up
    for this one line of arithmetic."""
    if size <= 1:
        return np.ones(max(size, 0))
    n = np.arange(1, (size + 1) // 2 + 1)
    if size % 2 == 0:
        half = (2 * n - 1.0) / size
        return np.concatenate([half, half[::-1]])
    half = 2 * n / (size + 1.0)
    return np.concatenate([half, half[-2::-1]])


def _spline(size: int, power: int = 2, exact: bool = True) -> np.ndarray:
    """The toolbox's squared-spline bump of `size` samples; scaled to a maximum of one as the
    toolbox does unless `exact` (then its two halves sum to one)."""
    quarter = int(size / 4)
    tri = _triang(size)
    outer = np.abs(2 * tri) ** power / 2
    outer[quarter:-quarter] = 0          # with quarter == 0 this slice is empty (kept as-is)
    inner = 1 - np.abs(2 * (tri - 1)) ** power / 2
    inner[:quarter] = 0
    inner[-quarter:] = 0                 # with quarter == 0 this clears everything (kept as-is)
    both = inner + outer
    return both if exact else both / np.amax(both)


def spline_window(size: int, left: int, right: int, power: int = 2, exact: bool = True) -> np.ndarray:
    """1-D tile weight: ones, with the rising half of a spline on the left overlap and the
    falling half on the right overlap."""
    window = np.ones(size)
    if left > 0:
        window[:left] = _spline(2 * left, power, exact)[:left]
    if right > 0:
        window[-right:] = _spline(2 * right, power, exact)[right:]
    return window


def window_2d(tile_size: tuple[int, int], overlap_x: tuple[int, int], overlap_y: tuple[int, int],
              power: int = 2, exact: bool = True) -> np.ndarray:
    """(Tx, Ty, 1) outer product of the two axes' windows."""
    wx = spline_window(tile_size[0], *overlap_x, power=power, exact=exact)
    wy = spline_window(tile_size[1], *overlap_y, power=power, exact=exact)
    return (wx[:, None] * wy[None, :])[..., None]


@lru_cache(maxsize=256)
def _cached_window(tile_size, overlap_x, overlap_y, power, exact) -> np.ndarray:
    window = window_2d(tile_size, overlap_x, overlap_y, power, exact)
    window.setflags(write=False)
    return window


def untile(tiles: np.ndarray, info: Tiling, power: int = 2, exact: bool = True) -> np.ndarray:
    """Put one head's (N, Tx, Ty, K) tiles back into a (B, X, Y, K) image of the tiles' dtype.

    `exact=False` reproduces the toolbox's max-scaled window (see the module docstring).

    The result is `untile_canvas`'s bit for bit, computed without its float64 canvas: the image
    is cut into cells covered by one fixed set of tiles; a cell one tile covers with weight one
    is that tile (plus 0.0, as the canvas adds it), any other cell sums its tiles' float64
    products in tile order, as the canvas does. Pad cells are never computed. ~2x less CPU than
    the canvas in numpy; float32/float64 tiles take one C pass (`_untile_kernels.untile_blend`, the
    same float64 sums, ~0.3x the CPU again on one channel) where the extension is built.
    """
    if info.small:
        (xl, xh), (yl, yh) = info.pad_x, info.pad_y
        return tiles[:, xl:(-xh or None), yl:(-yh or None), :]
    grid = _grid(info, tiles.shape[0])
    if grid is None or tiles.dtype.kind != "f" or not _blends(info):
        return untile_canvas(tiles, info, power, exact)
    if _native.untile_kernels is not None and tiles.dtype in (np.float32, np.float64):
        blended = _untile_native(tiles, info, grid, power, exact)
        if blended is not None:
            return blended
    if not tiles.flags.c_contiguous:  # one channel of a multi-channel head: one gather, not strided reads per cell
        tiles = np.ascontiguousarray(tiles)
    xs, ys = grid
    b, px, py = info.padded_shape
    (xl, xh), (yl, yh) = info.pad_x, info.pad_y
    out = np.empty((b, px - xl - xh, py - yl - yh, tiles.shape[-1]), dtype=tiles.dtype)
    ny = len(ys)
    # reused float64 buffers for the blended cells (fresh ones would page-fault on every cell)
    scratch = np.empty((2, info.tile_size[0] * info.tile_size[1] * tiles.shape[-1]), dtype=np.float64)
    for ax, bx, cover_x in _cells(xs, xl, px - xh):
        for ay, by, cover_y in _cells(ys, yl, py - yh):
            for bi in range(b):
                target = out[bi, ax - xl:bx - xl, ay - yl:by - yl]
                order = [bi * len(xs) * ny + ix * ny + iy for ix in cover_x for iy in cover_y]
                pieces = []
                for n in order:
                    (x0, _), (y0, _) = info.x_spans[n], info.y_spans[n]
                    window = _cached_window(info.tile_size, info.overlaps_x[n], info.overlaps_y[n], power, exact)
                    pieces.append((tiles[n, ax - x0:bx - x0, ay - y0:by - y0],
                                   window[ax - x0:bx - x0, ay - y0:by - y0]))
                if len(pieces) == 1 and _all_ones(*pieces[0][1].shape[:2], pieces[0][1]):
                    np.add(pieces[0][0], 0.0, out=target)  # 0.0 + tile x 1.0, as on the canvas
                    continue
                size = target.size
                acc = scratch[0, :size].reshape(target.shape)
                term = scratch[1, :size].reshape(target.shape)
                np.multiply(pieces[0][0], pieces[0][1], out=acc)
                acc += 0.0  # the canvas starts at 0.0 (so -0.0 becomes 0.0 there too)
                for tile, window in pieces[1:]:
                    np.multiply(tile, window, out=term)
                    acc += term
                target[...] = acc
    return out


def _untile_native(tiles: np.ndarray, info: Tiling, grid: tuple[list, list], power: int,
                   exact: bool) -> np.ndarray | None:
    """untile's blend in C, or None when a tile's overlaps are not its grid row's and column's
    (then each tile needs its own window: the numpy cells do that)."""
    xs, ys = grid
    ny = len(ys)
    over_x = [info.overlaps_x[ix * ny] for ix in range(len(xs))]
    over_y = [info.overlaps_y[iy] for iy in range(ny)]
    for n in range(tiles.shape[0]):
        ix, iy = divmod(n % (len(xs) * ny), ny)
        if info.overlaps_x[n] != over_x[ix] or info.overlaps_y[n] != over_y[iy]:
            return None
    (tx, ty), (b, px, py) = info.tile_size, info.padded_shape
    (xl, xh), (yl, yh) = info.pad_x, info.pad_y
    # window_2d is the outer product wx[i] * wy[j] in float64; the C loop forms the same product
    wx, wy = _stacked_windows(tx, tuple(over_x), power, exact), _stacked_windows(ty, tuple(over_y), power, exact)
    out = np.empty((b, px - xl - xh, py - yl - yh, tiles.shape[-1]), dtype=tiles.dtype)
    _native.untile_kernels.untile_blend(tiles, out, np.array([s for s, _ in xs], dtype=np.int64),
                                 np.array([s for s, _ in ys], dtype=np.int64), wx, wy, xl, yl)
    return out


@lru_cache(maxsize=64)
def _stacked_windows(size: int, overlaps: tuple[tuple[int, int], ...], power: int, exact: bool) -> np.ndarray:
    """The 1-D windows of one axis' tiles, stacked (read-only): the same for every head of an
    image and every image of a size, so made once (~0.3 ms of small numpy steps per head)."""
    stacked = np.stack([spline_window(size, *o, power=power, exact=exact) for o in overlaps])
    stacked.setflags(write=False)
    return stacked


def _all_ones(h: int, w: int, window: np.ndarray) -> bool:
    return bool(h and w and window[0, 0, 0] == 1.0 and (window == 1.0).all())


def _blends(info: Tiling) -> bool:
    (tx, ty), (_, px, py) = info.tile_size, info.padded_shape
    return MIN_TILE_SIZE <= tx < px and MIN_TILE_SIZE <= ty < py and info.stride_ratio >= MIN_STRIDE_RATIO


def _grid(info: Tiling, n: int) -> tuple[list, list] | None:
    """The distinct x and y spans when the tiles are the full batch x rows x columns grid in
    that order (as tile_image cuts them), else None."""
    xs = list(dict.fromkeys(info.x_spans))
    ys = list(dict.fromkeys(info.y_spans))
    b = info.padded_shape[0]
    if n != b * len(xs) * len(ys) or len(info.batches) != n:
        return None
    for i in range(n):
        bi, rest = divmod(i, len(xs) * len(ys))
        ix, iy = divmod(rest, len(ys))
        if info.batches[i] != bi or info.x_spans[i] != xs[ix] or info.y_spans[i] != ys[iy]:
            return None
    return xs, ys


def _cells(spans: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int, list[int]]]:
    """[a, b) pieces of [lo, hi) each covered by one set of spans, with those spans' indices."""
    edges = sorted({lo, hi, *(e for span in spans for e in span if lo < e < hi)})
    cells = []
    for a, b in itertools.pairwise(edges):
        cover = [i for i, (s, e) in enumerate(spans) if s <= a and b <= e]
        cells.append((a, b, cover))
    return cells


def untile_canvas(tiles: np.ndarray, info: Tiling, power: int = 2, exact: bool = True) -> np.ndarray:
    """The reference untiling: a float64 canvas the tiles are added into (or, without blending,
    copied, the last tile winning), cast to the tiles' dtype and cropped."""
    if info.small:
        (xl, xh), (yl, yh) = info.pad_x, info.pad_y
        return tiles[:, xl:(-xh or None), yl:(-yh or None), :]
    b, px, py = info.padded_shape
    tx, ty = info.tile_size
    canvas = np.zeros((b, px, py, tiles.shape[-1]), dtype=np.float64)
    blend = _blends(info)
    scratch = np.empty((tx, ty, tiles.shape[-1]), dtype=np.float64)
    for tile, bi, (x0, x1), (y0, y1), ox, oy in zip(
            tiles, info.batches, info.x_spans, info.y_spans, info.overlaps_x, info.overlaps_y):
        if blend:
            window = _cached_window(info.tile_size, ox, oy, power, exact)
            np.multiply(tile, window, out=scratch)
            canvas[bi, x0:x1, y0:y1] += scratch
        else:
            canvas[bi, x0:x1, y0:y1] = tile
    out = canvas.astype(tiles.dtype)
    (xl, xh), (yl, yh) = info.pad_x, info.pad_y
    return out[:, xl:px - xh, yl:py - yh]
