"""numpy <-> TensorProto, framed by hand.

Requests carry `tensor_content`: a small encoded header followed by the array's raw little-endian
bytes (one copy, when gRPC needs a single `bytes`). Replies are decoded in both forms TF Serving
uses (`tensor_content`, or the repeated `*_val` fields it sends by default) as read-only numpy views
into the reply bytes wherever the wire layout is the array's layout (raw bytes, packed float/double,
bool); varint fields (`int_val`, `int64_val`, `half_val`, ...) are decoded with vectorised numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from . import wire

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_BFLOAT16, DT_UINT16, DT_COMPLEX128 = 8, 9, 10, 14, 17, 18
DT_HALF, DT_UINT32, DT_UINT64 = 19, 22, 23

# TensorProto field numbers.
F_DTYPE, F_SHAPE, F_CONTENT = 1, 2, 4
F_HALF, F_FLOAT, F_DOUBLE, F_INT, F_STRING, F_SCOMPLEX = 13, 5, 6, 7, 8, 9
F_INT64, F_BOOL, F_DCOMPLEX, F_UINT32, F_UINT64 = 10, 11, 12, 16, 17

#: DataType -> (numpy dtype of the values, repeated field, how that field is laid out)
#: layouts: "raw" = packed fixed-width little-endian (view in place), "varint", "string".
_TYPES: dict[int, tuple[np.dtype, int, str]] = {
    DT_FLOAT: (np.dtype("<f4"), F_FLOAT, "raw"),
    DT_DOUBLE: (np.dtype("<f8"), F_DOUBLE, "raw"),
    DT_INT32: (np.dtype("<i4"), F_INT, "varint"),
    DT_UINT8: (np.dtype("u1"), F_INT, "varint"),
    DT_INT16: (np.dtype("<i2"), F_INT, "varint"),
    DT_INT8: (np.dtype("i1"), F_INT, "varint"),
    DT_STRING: (np.dtype(object), F_STRING, "string"),
    DT_COMPLEX64: (np.dtype("<c8"), F_SCOMPLEX, "raw"),
    DT_INT64: (np.dtype("<i8"), F_INT64, "varint"),
    DT_BOOL: (np.dtype("?"), F_BOOL, "varint"),
    DT_BFLOAT16: (np.dtype("<u2"), F_HALF, "varint"),  # bit patterns; widened on decode
    DT_UINT16: (np.dtype("<u2"), F_INT, "varint"),
    DT_COMPLEX128: (np.dtype("<c16"), F_DCOMPLEX, "raw"),
    DT_HALF: (np.dtype("<f2"), F_HALF, "varint"),
    DT_UINT32: (np.dtype("<u4"), F_UINT32, "varint"),
    DT_UINT64: (np.dtype("<u8"), F_UINT64, "varint"),
}

_BY_KIND: dict[tuple[str, int], int] = {
    ("f", 4): DT_FLOAT, ("f", 8): DT_DOUBLE, ("f", 2): DT_HALF,
    ("i", 1): DT_INT8, ("i", 2): DT_INT16, ("i", 4): DT_INT32, ("i", 8): DT_INT64,
    ("u", 1): DT_UINT8, ("u", 2): DT_UINT16, ("u", 4): DT_UINT32, ("u", 8): DT_UINT64,
    ("c", 8): DT_COMPLEX64, ("c", 16): DT_COMPLEX128, ("b", 1): DT_BOOL,
}

DTYPE_NAMES: dict[int, str] = {
    DT_FLOAT: "float32", DT_DOUBLE: "float64", DT_INT32: "int32", DT_UINT8: "uint8",
    DT_INT16: "int16", DT_INT8: "int8", DT_STRING: "object", DT_COMPLEX64: "complex64",
    DT_INT64: "int64", DT_BOOL: "bool", DT_BFLOAT16: "float32", DT_UINT16: "uint16",
    DT_COMPLEX128: "complex128", DT_HALF: "float16", DT_UINT32: "uint32", DT_UINT64: "uint64",
}


class CodecError(ValueError):
    """An array that cannot be sent, or bytes that are not a tensor we understand."""


def datatype_of(dtype: Any) -> int:
    """The TF DataType enum for a numpy dtype (strings -> DT_STRING, 'bfloat16' accepted)."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        return DT_BFLOAT16
    dt = np.dtype(dtype)
    if dt.name == "bfloat16":  # ml_dtypes, when the caller has it
        return DT_BFLOAT16
    if dt.kind in "OSU":
        return DT_STRING
    try:
        return _BY_KIND[(dt.kind, dt.itemsize)]
    except KeyError:
        raise CodecError(f"TF Serving has no tensor type for numpy dtype {dt}") from None


def numpy_dtype(datatype: int) -> np.dtype:
    """The numpy dtype `decode_tensor` returns for a TF DataType."""
    if datatype not in _TYPES:
        raise CodecError(f"unsupported TensorProto dtype {datatype}")
    return np.dtype(DTYPE_NAMES[datatype])


def float32_to_bfloat16_bits(arr: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest even) and return the 16-bit patterns."""
    bits = np.ascontiguousarray(arr, dtype="<f4").view("<u4")
    rounding = ((bits >> 16) & 1) + 0x7FFF
    out = ((bits + rounding) >> 16).astype("<u2")
    nan = np.isnan(arr)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype("<u4") << 16).view("<f4")


def shape_bytes(shape: Sequence[int]) -> bytes:
    """An encoded TensorShapeProto (dims only)."""
    out = bytearray()
    for size in shape:
        dim = wire.tag(1, wire.VARINT) + wire.varint(int(size)) if size else b""
        out += wire.len_field(2, dim)
    return bytes(out)


@dataclass
class EncodedTensor:
    """A TensorProto as a list of byte chunks (header, then payload views) and its total size."""

    chunks: list
    size: int


def _prepare(arr: Any, dtype: Any = None) -> tuple[np.ndarray, int]:
    a = np.asarray(arr)
    if dtype is not None and datatype_of(dtype) == DT_BFLOAT16 and a.dtype.name != "bfloat16":
        return float32_to_bfloat16_bits(a.astype("<f4", copy=False)).reshape(a.shape), DT_BFLOAT16
    datatype = datatype_of(a.dtype)
    if datatype == DT_STRING or a.dtype.name == "bfloat16":
        return a, datatype
    want = _TYPES[datatype][0]
    if a.dtype != want:  # big-endian input, or '=' vs '<' spelling
        a = a.astype(want)
    if not a.flags.c_contiguous:  # np.ascontiguousarray would turn a scalar into shape (1,)
        a = a.copy(order="C")
    return a, datatype


def _strings(a: np.ndarray) -> list[bytes]:
    out = []
    for item in a.reshape(-1).tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, (bytes, bytearray)):
            raise CodecError(f"string tensors hold bytes or str, got {type(item).__name__}")
        out.append(bytes(item))
    return out


def tensor_head(datatype: int, shape: Sequence[int]) -> bytes:
    """A TensorProto's leading `dtype` and `tensor_shape` fields (the values follow)."""
    return _tensor_head(int(datatype), tuple(int(d) for d in shape))


@lru_cache(maxsize=256)  # a worker sends the same few batch shapes over and over
def _tensor_head(datatype: int, shape: tuple[int, ...]) -> bytes:
    return wire.tag(F_DTYPE, wire.VARINT) + wire.varint(datatype) + wire.len_field(F_SHAPE, shape_bytes(shape))


def encode_tensor(arr: Any, *, form: str = "content", dtype: Any = None) -> EncodedTensor:
    """Encode an array as a TensorProto without copying its payload.

    `form="content"` puts the raw bytes in `tensor_content` (what requests use); `form="fields"`
    uses the repeated `*_val` field like TF Serving's default replies. `dtype="bfloat16"` sends
    float32 input as bfloat16.
    """
    a, datatype = _prepare(arr, dtype)
    head = tensor_head(datatype, a.shape)
    if datatype == DT_STRING:
        body = b"".join(wire.len_field(F_STRING, s) for s in _strings(a))
        return EncodedTensor([head + body], len(head) + len(body))
    if form == "content" or _TYPES[datatype][2] == "raw" or datatype == DT_BOOL:
        if a.size == 0 and form != "content":
            return EncodedTensor([head], len(head))
        payload = memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""
        field = F_CONTENT if form == "content" else _TYPES[datatype][1]
        prefix = wire.len_prefix(field, len(payload))
        return EncodedTensor([head + prefix, payload], len(head) + len(prefix) + len(payload))
    if form != "fields":
        raise CodecError(f"unknown tensor form {form!r}")
    values = a.reshape(-1)
    if datatype in (DT_HALF, DT_BFLOAT16):
        values = values.view("<u2")
    packed = wire.encode_varints(values.astype(np.int64) if values.dtype != np.uint64 else values.view(np.int64))
    if not packed:
        return EncodedTensor([head], len(head))
    body = wire.len_prefix(_TYPES[datatype][1], len(packed)) + packed
    return EncodedTensor([head, body], len(head) + len(body))


def tensor_bytes(arr: Any, *, form: str = "content", dtype: Any = None) -> bytes:
    """A complete serialized TensorProto (tests, small tensors)."""
    return b"".join(encode_tensor(arr, form=form, dtype=dtype).chunks)


def parse_shape(buf, offset: int, length: int) -> tuple[int, ...]:
    if length <= 64:  # replies repeat the same few shapes: skip the field walk
        return _parse_shape(bytes(buf[offset:offset + length]))
    return _parse_shape.__wrapped__(bytes(buf[offset:offset + length]))


@lru_cache(maxsize=256)
def _parse_shape(raw: bytes) -> tuple[int, ...]:
    dims = []
    for number, wt, pos, size in wire.fields(raw, 0, len(raw)):
        if number == 2 and wt == wire.LEN:
            value = 0
            for n2, wt2, v2, _ in wire.fields(raw, pos, pos + size):
                if n2 == 1 and wt2 == wire.VARINT:
                    value = v2 - (1 << 64) if v2 >= 1 << 63 else v2
            dims.append(value)
    return tuple(dims)


def _widen(values: np.ndarray, datatype: int) -> np.ndarray:
    if datatype == DT_BFLOAT16:
        return bfloat16_bits_to_float32(values)
    return values


def decode_tensor(buf, offset: int = 0, length: int | None = None) -> np.ndarray:
    """Decode a TensorProto occupying buf[offset:offset+length] into a numpy array.

    The result is a read-only view into `buf` when the values are stored as raw bytes.
    """
    end = len(buf) if length is None else offset + length
    datatype, shape, content = DT_INVALID, (), None
    repeated: list[tuple[int, int, int, int]] = []
    for number, wt, pos, size in wire.fields(buf, offset, end):
        if number == F_DTYPE and wt == wire.VARINT:
            datatype = pos
        elif number == F_SHAPE and wt == wire.LEN:
            shape = parse_shape(buf, pos, size)
        elif number == F_CONTENT and wt == wire.LEN:
            content = (pos, size)
        elif number in _VALUE_FIELDS:
            repeated.append((number, wt, pos, size))
    if datatype not in _TYPES:
        raise CodecError(f"unsupported TensorProto dtype {datatype}")
    if any(d < 0 for d in shape):
        raise CodecError(f"tensor has an unknown dimension in shape {shape}")
    dtype, field, layout = _TYPES[datatype]
    count = math.prod(shape)  # exact Python ints (1 for a scalar's empty shape)
    if content is not None and datatype != DT_STRING:
        pos, size = content
        if size != count * dtype.itemsize:
            raise CodecError(f"tensor_content has {size} bytes, shape {shape} needs {count * dtype.itemsize}")
        values = np.frombuffer(buf, dtype=dtype, count=count, offset=pos)
        return _widen(values, datatype).reshape(shape)
    values = _repeated_values(buf, datatype, dtype, field, layout, repeated)
    if values.size != count:
        values = _fill(values, count, shape, datatype)
    return _widen(values, datatype).reshape(shape)


DT_INVALID = 0
_VALUE_FIELDS = {F_HALF, F_FLOAT, F_DOUBLE, F_INT, F_STRING, F_SCOMPLEX, F_INT64, F_BOOL, F_DCOMPLEX,
                 F_UINT32, F_UINT64}


def _repeated_values(buf, datatype, dtype, field, layout, repeated) -> np.ndarray:
    chunks = [r for r in repeated if r[0] == field]
    if layout == "string":
        items = [bytes(buf[pos:pos + size]) for _, wt, pos, size in chunks if wt == wire.LEN]
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out
    parts = []
    for _, wt, pos, size in chunks:
        if layout == "raw":
            if wt == wire.LEN:  # packed: the payload is the array
                parts.append(np.frombuffer(buf, dtype=dtype, count=size // dtype.itemsize, offset=pos))
            else:  # unpacked element (I32/I64): complex values arrive as their float parts
                part = np.dtype(dtype.str[0] + "f" + str(size))
                parts.append(np.frombuffer(buf, dtype=part, count=1, offset=pos))
        elif wt == wire.LEN:
            if datatype == DT_BOOL and size and not (np.frombuffer(buf, np.uint8, size, pos) > 1).any():
                parts.append(np.frombuffer(buf, dtype=dtype, count=size, offset=pos))  # 1 byte per bool
            else:
                parts.append(_packed_varints(buf, pos, size, field, dtype))
        else:  # an unpacked varint element: `pos` already holds the value
            parts.append(_from_varints(np.array([pos], dtype=np.uint64), dtype))
    if not parts:
        return np.zeros(0, dtype=dtype)
    if len(parts) == 1:
        values = parts[0]
    else:
        values = np.concatenate(parts)
    if layout == "raw" and dtype.kind == "c" and values.dtype.kind == "f":
        values = values.view(dtype)
    return values


_VARINT_FIELDS = {F_INT: ("int_val", "<i4"), F_INT64: ("int64_val", "<i8"), F_UINT32: ("uint32_val", "<u4"),
                  F_UINT64: ("uint64_val", "<u8"), F_HALF: ("half_val", "<i4"), F_BOOL: ("bool_val", "?")}


def _packed_varints(buf, pos: int, size: int, field: int, dtype: np.dtype) -> np.ndarray:
    """Packed varints through protobuf's C parser (several times faster than numpy here)."""
    from .protos import rcserving_pb2 as pb

    name, wire_dtype = _VARINT_FIELDS[field]
    prefix = wire.len_prefix(field, size)
    start = pos - len(prefix)
    if start >= 0 and bytes(buf[start:pos]) == prefix:  # the field as it sits in the reply: no copy
        msg = pb.TensorProto.FromString(memoryview(buf)[start:pos + size])
    else:
        msg = pb.TensorProto.FromString(prefix + bytes(buf[pos:pos + size]))
    values = np.array(getattr(msg, name), dtype=wire_dtype)
    if dtype.kind == "f":  # half: 16-bit patterns in int32 varints
        return values.astype("<u2").view(dtype)
    return values.astype(dtype, copy=False)


def _from_varints(raw: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "b":
        return raw != 0
    if dtype.kind == "f":  # half: 16-bit patterns in int32 varints
        return raw.astype("<u2").view(dtype)
    if dtype.kind == "i":
        return raw.view(np.int64).astype(dtype)
    return raw.astype(dtype)


def _fill(values: np.ndarray, count: int, shape, datatype) -> np.ndarray:
    """TF's compact form: fewer values than elements means 'repeat the last one'."""
    if values.size > count:
        raise CodecError(f"tensor holds {values.size} values, shape {shape} needs {count}")
    out = np.empty(count, dtype=values.dtype)
    if values.size:
        out[: values.size] = values
        out[values.size:] = values[-1]
    elif values.dtype == object:
        out[:] = b""
    else:
        out[:] = 0
    return out
