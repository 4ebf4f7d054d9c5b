"""Load an uploaded image into a (frames, height, width, channels) array, safely.

Users upload TIFF (single or multi-page, any channel layout, integer or float), PNG, JPEG or
`.npy` files. The format is recognised from the file's first bytes, not its name, and the
image's dimensions are read from the header and checked against the limits BEFORE any pixel is
decoded, so an oversized or hostile file costs almost nothing. Every problem with the file is a
`UserError` naming it, worded for the person who uploaded it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError, quote

#: Axis letters that hold channels (tifffile: C = channel, S = sample, e.g. RGB).
CHANNEL_AXES = "CS"
#: Axis letters accepted in a job's `dimension_order` (kiosk field).
KNOWN_AXES = set("TZCYXSQIB")
SUPPORTED = "TIFF, PNG, JPEG or .npy"
#: The orders the kiosk page's dropdown offers (kiosk-frontend src/Predict/DimensionOrderDropdown.js:12).
#: The kiosk reads them by position: X is the first spatial array axis (rows), Y the second,
#: never transposed; only B (batch) and C (channel) move
#: (kiosk-redis-consumer 0.17.2 redis_consumer/consumers/segmentation_consumer.py:89-108).
KIOSK_ORDERS = ("XY", "BXY", "CXY", "XYB", "XYC", "BXYC", "CXYB")
#: Kiosk letter -> tifffile letter, positional: kiosk X = rows (tifffile Y), kiosk Y = columns (X).
_KIOSK_TO_TIFF = {"X": "Y", "Y": "X", "B": "Q", "C": "C"}
#: The `channels` field is bounded before it is parsed (a 12,000-entry field is a quick user error).
MAX_CHANNEL_ENTRIES = 64
MAX_CHANNELS_FIELD = 512
#: The first four bytes of a TIFF (little/big endian, classic/BigTIFF).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class Limits:
    """Largest image a job may submit (MAX_IMAGE_HEIGHT / WIDTH / FRAMES) and the smallest (MIN_IMAGE_SIZE)."""

    height: int = 2048
    width: int = 2048
    frames: int = 64
    min_size: int = 8
    #: MAX_IMAGE_CHANNELS: the channel axis is bounded like the others, from the header.
    channels: int = 16
    #: MAX_DECODED_BYTES: pixels the header promises (all axes x dtype size) before decoding.
    decoded_bytes: int = 1 << 30

    @classmethod
    def from_settings(cls, settings) -> Limits:
        return cls(settings.MAX_IMAGE_HEIGHT, settings.MAX_IMAGE_WIDTH, settings.MAX_IMAGE_FRAMES,
                   settings.MIN_IMAGE_SIZE, getattr(settings, "MAX_IMAGE_CHANNELS", cls.channels),
                   getattr(settings, "MAX_DECODED_BYTES", cls.decoded_bytes))


@dataclass(frozen=True)
class Header:
    """What the header says: format, raw shape, axis letters and dtype."""

    format: str
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype


def sniff(path: str, name: str | None = None) -> str:
    """The file's format from its magic bytes: tiff | png | jpeg | npy; UserError otherwise."""
    name = name or os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise UserError(f"The file {quote(name)} could not be read ({exc.strerror or exc}).") from None
    if not head:
        raise UserError(f"The file {quote(name)} is empty; upload a {SUPPORTED} image.")
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    raise UserError(f"The file {quote(name)} is not a supported image; upload a {SUPPORTED} file.")


def _guess_axes(shape: Sequence[int]) -> str:
    """Axes of an array without metadata: channels-last when the last axis is small."""
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        if shape[-1] <= 16:
            return "YXC"
        if shape[0] <= 16 and shape[1] > 16:
            return "CYX"
        return "ZYX"
    if nd >= 4:
        return "TZQI"[: nd - 3] + "YXC" if shape[-1] <= 16 else "TZQI"[: nd - 2] + "YX"
    raise UserError(f"The image has {nd} dimension(s); it needs at least height and width.")


@contextlib.contextmanager
def opened_tiff(path: str) -> Iterator[Any]:
    """An open `tifffile.TiffFile` of `path` for `read_header` and `decode_pixels` to share, or
    None when it is not a TIFF tifffile opens (`read_header` then says what is wrong).

    Why: tifffile writes an (H, W, C) array as one IFD per row, and parsing the ~1000 IFDs of a
    megapixel stack took ~1.4 ms each time the file was opened (once for the header, once more
    for the pixels)."""
    tif = None
    try:
        with open(path, "rb") as fh:
            is_tiff = fh.read(4) in _TIFF_MAGIC
        if is_tiff:
            import tifffile

            tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - unreadable or corrupt: read_header opens it again and words the error
        tif = None
    try:
        yield tif
    finally:
        if tif is not None:
            tif.close()


def read_header(path: str, name: str | None = None, tiff: Any = None) -> Header:
    """Format, shape and axes from the file header only (no pixel data decoded); `tiff` is an
    `opened_tiff` of `path` to read it from."""
    name = name or os.path.basename(path)
    fmt = sniff(path, name)
    try:
        if fmt == "tiff":
            import tifffile

            with contextlib.nullcontext(tiff) if tiff is not None else tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise UserError(f"The TIFF file {quote(name)} is corrupt or truncated: it holds no image data.")
                series = tif.series[0]
                shape = tuple(int(s) for s in series.shape)
                axes = str(series.axes).upper()
                dtype = np.dtype(series.dtype)
        elif fmt in ("png", "jpeg"):
            from PIL import Image

            with Image.open(path) as im:
                width, height = im.size
                bands = len(im.getbands())
                frames = int(getattr(im, "n_frames", 1) or 1)
                shape = (frames, height, width, bands)
                axes = "IYXC"
                dtype = np.dtype(np.uint16 if im.mode.startswith("I;16") else (np.int32 if im.mode == "I" else np.uint8))
        else:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            shape = tuple(int(s) for s in shape)
            if dtype.hasobject:
                raise UserError(f"The file {quote(name)} holds Python objects, not an image.")
            axes = _guess_axes(shape)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"The file {quote(name)} is corrupt or truncated and could not be read as {fmt.upper()}.") from exc
    if len(axes) != len(shape):
        axes = _guess_axes(shape)
    return Header(fmt, shape, axes, dtype)


def kiosk_header(header: Header) -> Header:
    """The header as the kiosk loads the file: PNG/JPEG as (height, width, bands), TIFF as stored.

    The kiosk reads non-TIFF images with PIL + keras `img_to_array`, always (H, W, C), first frame
    only (kiosk-redis-consumer 0.17.2 redis_consumer/utils.py:91-108).
    """
    if header.format in ("png", "jpeg"):
        return Header(header.format, header.shape[1:], "YXC", header.dtype)
    return header


def apply_dimension_order(header: Header, dimension_order: str | None) -> Header:
    """Honour the kiosk's `dimension_order` field when the job sets one.

    The kiosk dropdown's orders (`KIOSK_ORDERS`: XY, XYB, CXY, ...) are positional: X names the
    first spatial array axis (rows) and Y the second, so nothing is transposed; PNG/JPEG count as
    (H, W, C) for them, as in the kiosk. Other letters (`CYX`, `ZYXC`, ...) are tifffile axes.
    """
    if not dimension_order:
        return header
    order = dimension_order.strip().upper()
    if order in KIOSK_ORDERS:
        header = kiosk_header(header)
        if len(order) != len(header.shape):
            raise UserError(
                f"The job's dimension_order {order!r} has {len(order)} axes but the image has "
                f"{len(header.shape)} ({'x'.join(map(str, header.shape))}); pick the order with one letter per axis."
            )
        return Header(header.format, header.shape, "".join(_KIOSK_TO_TIFF[a] for a in order), header.dtype)
    if not order or set(order) - KNOWN_AXES or len(set(order)) != len(order):
        raise UserError(f"The job's dimension_order {quote(dimension_order)} is not valid; use letters such as CYX or ZYXC.")
    shape = header.shape
    if len(order) != len(shape):
        shape = tuple(s for s in shape if s != 1)  # tifffile may add singleton page/sample axes
    if len(order) != len(shape):
        raise UserError(
            f"The job's dimension_order {quote(dimension_order)} has {len(order)} axes but the image has "
            f"{len(shape)} ({'x'.join(map(str, shape))})."
        )
    if "Y" not in order or "X" not in order:
        raise UserError(f"The job's dimension_order {quote(dimension_order)} must contain Y and X.")
    return Header(header.format, shape, order, header.dtype)


def normalized_shape(header: Header) -> tuple[int, int, int, int]:
    """(frames, height, width, channels) the image will have once loaded."""
    frames = channels = 1
    height = width = 1
    for size, axis in zip(header.shape, header.axes):
        if axis == "Y":
            height = size
        elif axis == "X":
            width = size
        elif axis in CHANNEL_AXES:
            channels *= size
        else:
            frames *= size
    return frames, height, width, channels


def check_limits(header: Header, limits: Limits, name: str) -> tuple[int, int, int, int]:
    """UserError stating the limit and the image's size when it is too big or too small (header only)."""
    mapped = [s for s in header.shape if s != 1]
    if len(mapped) > 4:  # folding two or more stack axes into frames would mix them up silently
        raise UserError(
            f"The image {quote(name)} has {len(mapped)} dimensions (shape {'x'.join(map(str, header.shape))}, "
            f"axes {header.axes}), more than the 4 that can be read (frames, height, width, channels); "
            "keep one stack axis (time or z) and split the rest into separate files."
        )
    frames, height, width, channels = normalized_shape(header)
    if height > limits.height or width > limits.width:
        raise UserError(
            f"The image {quote(name)} is {height}x{width} pixels (height x width), larger than the "
            f"{limits.height}x{limits.width} limit (MAX_IMAGE_HEIGHT x MAX_IMAGE_WIDTH); split or downscale it."
        )
    if frames > limits.frames:
        raise UserError(
            f"The image {quote(name)} has {frames} frames, more than the limit of {limits.frames} "
            "(MAX_IMAGE_FRAMES); split it into smaller files."
        )
    if channels > limits.channels:
        raise UserError(
            f"The image {quote(name)} has {channels} channels, more than the limit of {limits.channels} "
            "(MAX_IMAGE_CHANNELS); keep only the channels the model needs."
        )
    decoded = math.prod(header.shape) * max(header.dtype.itemsize, 1)
    if decoded > limits.decoded_bytes:
        raise UserError(
            f"The image {quote(name)} would take {decoded} bytes once decoded ({'x'.join(map(str, header.shape))} "
            f"{header.dtype}), more than the {limits.decoded_bytes}-byte limit (MAX_DECODED_BYTES); split it."
        )
    if min(frames, height, width, channels) < 1 or math.prod(header.shape) == 0:
        raise UserError(f"The image {quote(name)} is empty ({'x'.join(map(str, header.shape))} pixels).")
    if height < limits.min_size or width < limits.min_size:
        raise UserError(
            f"The image {quote(name)} is {height}x{width} pixels (height x width), smaller than the "
            f"{limits.min_size}x{limits.min_size} minimum (MIN_IMAGE_SIZE); upload a larger image."
        )
    return frames, height, width, channels


def check_finite(image: np.ndarray, name: str) -> None:
    """UserError when a float image holds NaN or infinite pixels (they would poison normalisation)."""
    if image.dtype.kind != "f" or image.size == 0:
        return
    if np.isfinite(image.min()) and np.isfinite(image.max()):  # two passes, no temporary array
        return
    nan = int(np.count_nonzero(np.isnan(image)))
    inf = int(np.count_nonzero(np.isinf(image)))
    found = " and ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} infinite (Inf)" if inf else "")
                         if part)
    raise UserError(f"The image {quote(name)} has {found} pixel value(s); every pixel must be a finite number.")


def _decode(path: str, header: Header, tiff: Any = None) -> np.ndarray:
    if header.format == "tiff":
        import tifffile

        with contextlib.nullcontext(tiff) if tiff is not None else tifffile.TiffFile(path) as tif:
            return tif.series[0].asarray()
    if header.format in ("png", "jpeg"):
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            if len(header.shape) == 3:  # kiosk layout (H, W, C): the first frame only, like the kiosk
                return np.asarray(im).reshape(header.shape)
            frames = [np.asarray(frame.copy()) for frame in ImageSequence.Iterator(im)]
        out = np.stack(frames)
        return out if out.ndim == 4 else out[..., np.newaxis]
    return np.load(path, allow_pickle=False)


def decode_pixels(path: str, header: Header, name: str, tiff: Any = None) -> np.ndarray:
    """Decode the pixels into an array of `header.shape` (booleans become uint8); call after the
    checks. `tiff`: the `opened_tiff` the header was read from."""
    try:
        data = _decode(path, header, tiff)
    except UserError:
        raise
    except MemoryError:
        raise UserError(f"The image {quote(name)} is too large to load.") from None
    except Exception as exc:
        raise UserError(f"The file {quote(name)} is corrupt or truncated and its pixels could not be read.") from exc
    if data.size != math.prod(header.shape):
        raise UserError(f"The file {quote(name)} is corrupt or truncated: its pixel data does not match its header.")
    data = data.reshape(header.shape)
    return data.astype(np.uint8) if data.dtype == bool else data


def to_fhwc(data: np.ndarray, axes: str) -> np.ndarray:
    """Rearrange an array with axis letters into (frames, height, width, channels)."""
    frame_axes = [i for i, a in enumerate(axes) if a not in "YX" and a not in CHANNEL_AXES]
    chan_axes = [i for i, a in enumerate(axes) if a in CHANNEL_AXES]
    order = frame_axes + [axes.index("Y"), axes.index("X")] + chan_axes
    moved = np.transpose(data, order)
    f, h, w, c = normalized_shape(Header("", data.shape, axes, data.dtype))
    return moved.reshape(f, h, w, c)


def select_channels(image: np.ndarray, channels: str | None, name: str) -> np.ndarray:
    """Honour the kiosk's `channels` field: comma-separated channel indices, in order."""
    if not channels or not channels.strip():
        return image
    if len(channels) > MAX_CHANNELS_FIELD or channels.count(",") >= MAX_CHANNEL_ENTRIES:
        raise UserError(
            f"The job's channels field has {channels.count(',') + 1} entries ({len(channels)} characters); "
            f"list at most {MAX_CHANNEL_ENTRIES} channel numbers such as 0,1."
        )
    try:
        wanted = [int(p) for p in channels.replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise UserError(f"The job's channels field {quote(channels)} must list channel numbers such as 0,1.") from None
    have = image.shape[-1]
    bad = [c for c in wanted if not 0 <= c < have]
    if bad or not wanted:
        raise UserError(
            f"The job asks for channel(s) {quote(channels)} but the image {quote(name)} has {have} channel(s) (numbered from 0)."
        )
    return image[..., wanted]


def load_image(
    path: str,
    limits: Limits | None = None,
    *,
    channels: str | None = None,
    dimension_order: str | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Read `path` as a (frames, height, width, channels) array, checking limits from the header first.

    Integer and float dtypes are kept as stored; booleans become uint8. `name` is how the file
    is named in error messages (the user's original file name).
    """
    limits = limits or Limits()
    name = name or os.path.basename(path)
    with opened_tiff(path) as tiff:
        header = apply_dimension_order(read_header(path, name, tiff), dimension_order)
        check_limits(header, limits, name)
        if header.dtype.kind not in "uifb":
            raise UserError(f"The image {quote(name)} has pixel type {header.dtype}; use integer or floating-point "
                            "pixels.")
        data = decode_pixels(path, header, name, tiff)
    image = select_channels(to_fhwc(data, header.axes), channels, name)
    check_finite(image, name)
    return image
