"""The kiosk's image layout rules: load, `dimension_order`, `channels` slots, `scale`, `label`.

The DeepCell Kiosk's web page and kiosk-client submit jobs whose fields mean what
kiosk-redis-consumer 0.17.2 (KRC) makes of them, so a drop-in replacement must read them the
same way or results come back transposed or fail:

* Loading (KRC redis_consumer/utils.py:91-108): a TIFF is the array as stored (tifffile's first
  series, so a 2-D TIFF stays 2-D); any other image is (H, W, C), a grayscale PNG (H, W, 1).
* `dimension_order` (KRC consumers/segmentation_consumer.py:89-108, 157-160) is one of the page's
  dropdown orders (kiosk-frontend src/Predict/JobForm/DimensionOrderDropdown.js:12) and names the
  array axes BY POSITION: X is the first spatial axis, Y the second, and they are never
  transposed; only B and C move, giving (B, ax0, ax1, C). Its length must equal the array's ndim.
* `channels` (segmentation_consumer.py:162-202) is positional by model slot: slot 0 nuclear,
  slot 1 cytoplasm, slot 2 phase (KRC settings.py:132-142); an empty entry skips the slot.
* `scale` (KRC base_consumer.py:461-476) is a resize factor in [0.1, 10]; `label` is never read
  by the 0.17.2 segmentation path (segmentation_consumer.py:47-87 is marked deprecated).

Where the kiosk would crash (wrong letter count, out-of-range channel, a fourth slot) the job
fails with one sentence a user can act on. Empty fields (kiosk-client sends no job form,
kiosk-client kiosk_client/job.py:255-282) get the automatic rules documented in docs/kiosk.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError, quote
from . import image_io
from .image_io import KIOSK_ORDERS, Header, Limits

__all__ = [
    "KIOSK_ORDERS", "SLOT_NAMES", "KioskLayout", "load_for_kiosk", "load_kiosk_image", "parse_label",
    "parse_mesmer_channels", "parse_scale", "parse_segmentation_channels", "plan_layout", "read_kiosk_header",
]

#: Model slot names of the segmentation job's `channels` field, in slot order.
SLOT_NAMES = ("nuclear", "cytoplasm", "phase")
MIN_SCALE, MAX_SCALE = 0.1, 10.0  # KRC settings.py:110-113
_SUGGEST = {2: "XY", 3: "XYB, XYC, BXY or CXY", 4: "BXYC or CXYB"}
_TIFF_LETTERS = {"X": "Y", "Y": "X", "B": "Q", "C": "C"}  # kiosk letter -> tifffile letter (positional)


@dataclass(frozen=True)
class KioskLayout:
    """How an input's axes map to (B, ax0, ax1, C) and back.

    `order` is the kiosk order used (after the automatic choice when the job gave none);
    `input_shape` the array as loaded. `restore` puts any per-pixel output back in the input's
    own layout, so a label image has the input's height and width and its frames in order.
    """

    order: str
    input_shape: tuple[int, ...]
    auto: bool = False

    @property
    def bxyc_shape(self) -> tuple[int, int, int, int]:
        """(batches, ax0, ax1, channels) of the input once laid out."""
        size = dict(zip(self.order, self.input_shape))
        return size.get("B", 1), size["X"], size["Y"], size.get("C", 1)

    def to_bxyc(self, array: np.ndarray) -> np.ndarray:
        """The input array as (B, ax0, ax1, C): B and C moved, spatial axes in file order (a view)."""
        if tuple(array.shape) != self.input_shape:
            raise ValueError(f"expected an array of shape {self.input_shape}, got {array.shape}")
        perm = [self.order.index(a) for a in "BXYC" if a in self.order]
        out = np.transpose(array, perm)
        if "B" not in self.order:
            out = out[np.newaxis]
        if "C" not in self.order:
            out = out[..., np.newaxis]
        return out

    def restored_axes(self, features: int = 1) -> str:
        """Kiosk letters of `restore`'s result for an output with `features` channels."""
        axes = self.order
        if "C" not in axes and features != 1:
            axes += "C"
        return axes

    def restore(self, output: np.ndarray) -> np.ndarray:
        """An output (B, ax0, ax1[, K]) back in the input's layout, K taking the channel axis's place.

        Without a C axis in the input and K == 1 the channel axis is dropped (an XY input gives an
        (ax0, ax1) label image); with K > 1 it is appended last.
        """
        out = output if output.ndim == 4 else output[..., np.newaxis]
        b, x, y, _k = self.bxyc_shape
        if out.ndim != 4 or out.shape[:3] != (b, x, y):
            raise ValueError(f"expected an output of shape ({b}, {x}, {y}, K), got {output.shape}")
        axes = self.restored_axes(out.shape[-1])
        if "B" not in axes:
            out = out[0]
        if "C" not in axes:
            out = out[..., 0]
        present = "".join(a for a in "BXYC" if a in axes)
        return np.transpose(out, [present.index(a) for a in axes])


def _auto_order(shape: Sequence[int], axes: str, name: str) -> str:
    """The order for a job that gives none (kiosk-client never does): documented in docs/kiosk.md.

    2-D: XY. 3-D: the smallest axis is the non-spatial one; at the end it is a channel axis
    (XYC: PNG/JPEG bands, RGB TIFF samples); at the front it is a stack of frames (BXY: multi-page TIFF) unless the TIFF header calls it
    channels (CXY). 4-D: BXYC when the last axis is the smallest. Anything else needs an order.
    """
    nd = len(shape)
    if nd == 2:
        return "XY"
    if nd == 3:
        smallest = min(shape)
        if shape[-1] == smallest:
            return "XYC"
        if shape[0] == smallest:
            return "CXY" if len(axes) == 3 and axes[0] in "CS" else "BXY"
    if nd == 4 and shape[-1] <= min(shape[1], shape[2]):
        return "BXYC"
    dims = "x".join(map(str, shape))
    if nd in _SUGGEST:
        raise UserError(f"The image {name!r} ({dims}) has no dimension_order and its layout cannot be guessed; "
                        f"set dimension_order to {_SUGGEST[nd]}.")
    raise UserError(f"The image {name!r} has {nd} dimension(s) ({dims}); the kiosk reads 2-D, 3-D or 4-D images.")


def plan_layout(shape: Sequence[int], dimension_order: str | None, name: str = "the image",
                axes: str = "") -> KioskLayout:
    """Check `dimension_order` against the array's shape (as loaded) and return its layout.

    `axes` are the tifffile axis letters of the header, used only by the automatic choice for an
    empty order. UserError when the order is not one the kiosk offers or does not fit the shape.
    """
    shape = tuple(int(s) for s in shape)
    order = (dimension_order or "").strip().upper()
    if not order:
        return KioskLayout(_auto_order(shape, axes.upper(), name), shape, auto=True)
    if order not in KIOSK_ORDERS:
        raise UserError(f"The job's dimension_order {quote(dimension_order)} is not one the kiosk offers; "
                        f"use one of {', '.join(KIOSK_ORDERS)}.")
    if len(order) != len(shape):
        hint = _SUGGEST.get(len(shape), "an order with one letter per axis")
        raise UserError(f"The job's dimension_order {order!r} has {len(order)} axes but the image {name!r} has "
                        f"{len(shape)} ({'x'.join(map(str, shape))}); use {hint}.")
    return KioskLayout(order, shape)


def read_kiosk_header(path: str, name: str | None = None, tiff: Any = None) -> Header:
    """The header with the shape the kiosk would load (no pixel decoded): TIFF as stored, else (H, W, C).
    `tiff`: an `image_io.opened_tiff` of `path`."""
    return image_io.kiosk_header(image_io.read_header(path, name, tiff))


def _check(header: Header, layout: KioskLayout, limits: Limits, name: str) -> None:
    tiff_axes = "".join(_TIFF_LETTERS[a] for a in layout.order)
    image_io.check_limits(Header(header.format, header.shape, tiff_axes, header.dtype), limits, name)
    if header.dtype.kind not in "uifb":
        raise UserError(f"The image {name!r} has pixel type {header.dtype}; use integer or floating-point pixels.")


def load_for_kiosk(path: str, dimension_order: str | None, limits: Limits | None = None, *,
                   name: str | None = None) -> tuple[np.ndarray, KioskLayout]:
    """Load `path` as the kiosk does and lay it out as (B, ax0, ax1, C), with its `KioskLayout`.

    Every limit (height = ax0, width = ax1, frames = B, MAX_IMAGE_CHANNELS, MAX_DECODED_BYTES) is
    checked from the header before any pixel is decoded. Pixels keep their stored dtype (the
    kiosk casts to float32: cast when feeding a model). NaN/Inf pixels are a user error.
    """
    limits = limits or Limits()
    name = name or os.path.basename(path)
    with image_io.opened_tiff(path) as tiff:
        header = read_kiosk_header(path, name, tiff)
        layout = plan_layout(header.shape, dimension_order, name, header.axes if header.format == "tiff" else "")
        _check(header, layout, limits, name)
        image = layout.to_bxyc(image_io.decode_pixels(path, header, name, tiff))
    image_io.check_finite(image, name)
    return image, layout


def load_kiosk_image(path: str, limits: Limits | None = None, *, name: str | None = None) -> np.ndarray:
    """The raw array exactly as the kiosk loads it (TIFF as stored; PNG/JPEG (H, W, C)), dtype kept.

    Limits are checked from the header under the automatic layout (the kiosk checks none before
    decoding); use `load_for_kiosk` for jobs.
    """
    limits = limits or Limits()
    name = name or os.path.basename(path)
    with image_io.opened_tiff(path) as tiff:
        header = read_kiosk_header(path, name, tiff)
        try:
            layout = plan_layout(header.shape, "", name, header.axes if header.format == "tiff" else "")
        except UserError:  # no guess: bound it as a stack of frames
            layout = None
        if layout is not None:
            _check(header, layout, limits, name)
        else:
            image_io.check_limits(header, limits, name)
        return image_io.decode_pixels(path, header, name, tiff)


def _field_entries(field: str, what: str, most: int, example: str) -> list[str]:
    if len(field) > 16 * most or field.count(",") >= most:
        raise UserError(f"The job's channels field has {field.count(',') + 1} entries; {what} takes at most "
                        f"{most}, e.g. {example}.")
    return [p.strip() for p in field.split(",")]


def _channel_number(entry: str, field: str, n_channels: int, role: str, name: str) -> int:
    if not entry.isdigit() or not entry.isascii():
        raise UserError(f"The job's channels field {quote(field)} has {quote(entry)} for the {role} channel; "
                        "give channel numbers counted from 0.")
    channel = int(entry)
    if channel >= n_channels:
        raise UserError(f"The job's channels field {quote(field)} asks for channel {channel} as the {role} "
                        f"channel but the image {name!r} has {n_channels} channel(s), numbered from 0.")
    return channel


def parse_segmentation_channels(field: str | None, n_channels: int, name: str = "the image") -> dict[int, int]:
    """Model slot -> image channel for a segmentation job (slot 0 nuclear, 1 cytoplasm, 2 phase).

    `"0,"` = nuclear model on channel 0; `",0"` = cytoplasm model on channel 0; an empty entry
    skips its slot; an empty field means `"0"` (kiosk-client sends none). The dict is in slot
    order, which is the order of the result's channels (segmentation_consumer.py:178-205). Unlike
    the kiosk, two slots may read the same channel of a one-channel image (docs/kiosk.md).
    """
    text = (field or "").strip()
    if not text:
        text = "0"
    entries = _field_entries(text, "a segmentation job (nuclear, cytoplasm, phase)", len(SLOT_NAMES),
                             "'0,' (nuclear) or ',0' (cytoplasm)")
    slots = {i: _channel_number(e, text, n_channels, SLOT_NAMES[i], name) for i, e in enumerate(entries) if e}
    if not slots:
        raise UserError(f"The job's channels field {quote(text)} fills no model slot; give e.g. '0,' for the "
                        "nuclear model on channel 0.")
    return slots


def parse_mesmer_channels(field: str | None, n_channels: int, name: str = "the image") -> tuple[int, int]:
    """(nuclear channel, membrane channel) for a mesmer job; an empty field means (0, 1).

    The kiosk feeds every entry to int() and needs exactly two (KRC consumers/mesmer_consumer.py:
    119-125), so `"0,"` crashes it; here it is a reason naming the missing channel.
    """
    text = (field or "").strip() or "0,1"
    entries = _field_entries(text, "a mesmer job", 2, "'0,1' (nuclear, membrane)")
    if len(entries) != 2:
        raise UserError(f"The job's channels field {quote(text)} has {len(entries)} entries but mesmer needs 2 "
                        "(nuclear, membrane), e.g. '0,1'.")
    for entry, role in zip(entries, ("nuclear", "membrane")):
        if not entry:
            raise UserError(f"The job's channels field {quote(text)} leaves the {role} channel empty; mesmer "
                            "needs both a nuclear and a membrane channel, e.g. '0,1'.")
    nuclear, membrane = (_channel_number(e, text, n_channels, r, name) for e, r in zip(entries, ("nuclear", "membrane")))
    return nuclear, membrane


def parse_scale(field: str | None, minimum: float = MIN_SCALE, maximum: float = MAX_SCALE) -> float:
    """The `scale` field as a resize factor: '' -> 1 (no scale detection), else a number in [0.1, 10].

    The page sends values such as 1, 2, 0.5, 0.3334 (kiosk-frontend src/Predict/JobForm/
    ResolutionDropdown.js:8-46); the kiosk runs scale detection for '' (base_consumer.py:461-467).
    """
    text = (field or "").strip()
    if not text:
        return 1.0
    try:
        value = float(text) if len(text) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise UserError(f"The job's scale {quote(text)} is not a number; give a number from {minimum:g} to "
                        f"{maximum:g} such as 1 or 0.5.")
    if not minimum <= value <= maximum:
        raise UserError(f"The job's scale {quote(text)} is outside the range {minimum:g} to {maximum:g}; "
                        "give e.g. 1 for images at the model's resolution.")
    return value


def parse_label(field: str | None) -> int | None:
    """The `label` field ('' or '0'/'1'/'2' from kiosk-client --label): read but, as in the kiosk, unused.

    Never fails: the kiosk's 0.17.2 consumers ignore it (segmentation_consumer.py:47-87 unused).
    """
    text = (field or "").strip()
    return int(text) if text.isdigit() and text.isascii() and len(text) <= 3 else None
