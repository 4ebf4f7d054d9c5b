"""Predict request/response framing and parsing, plus model-metadata conversion.

`frame_predict_request` builds the PredictRequest bytes as a few small header chunks around the
input arrays' raw bytes; `parse_predict_response` returns numpy views into the reply bytes. The
same two functions in the other direction serve the dev model server. Metadata and status messages
are small and go through the generated protobuf classes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import codec, layouts, wire

SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorSpec:
    """dtype and shape of one model input or output; -1 marks an unknown dimension."""

    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass
class ModelMetadata:
    """What GetModelMetadata says about one served model version (one signature)."""

    name: str
    version: int | None
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: dict[str, TensorSpec] = field(default_factory=dict)
    signature: str = DEFAULT_SIGNATURE

    def to_json(self) -> str:
        def specs(d):
            return {k: {"dtype": v.dtype.name, "shape": list(v.shape)} for k, v in d.items()}

        return json.dumps({"name": self.name, "version": self.version, "signature": self.signature,
                           "inputs": specs(self.inputs), "outputs": specs(self.outputs)})

    def to_kiosk_json(self) -> str:
        """The inputs as the DeepCell Kiosk's consumers cache them (JSON of the SignatureDef
        inputs), so kiosk and redis-consumer workers can share the `{model}:{version}` hash."""
        pb = _pb()
        out = {}
        for key, spec in self.inputs.items():
            out[key] = {"dtype": pb.DataType.Name(codec.datatype_of(spec.dtype)) if spec.dtype != object
                        else "DT_STRING",
                        "tensorShape": {"dim": [{"size": str(d)} for d in spec.shape]}, "name": f"{key}:0"}
        return json.dumps(out)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelMetadata:
        data = json.loads(text)

        def specs(d):
            return {k: TensorSpec(np.dtype(v["dtype"]), tuple(v["shape"])) for k, v in d.items()}

        return cls(data["name"], data["version"], specs(data["inputs"]), specs(data["outputs"]),
                   data.get("signature", DEFAULT_SIGNATURE))


def parse_version(version: int | str | None) -> int | str | None:
    """None/''/'latest' -> None (latest), digits -> int, anything else -> a version label."""
    if version is None:
        return None
    if isinstance(version, (int, np.integer)):
        return int(version)
    text = str(version).strip()
    if text in ("", "latest", "None"):
        return None
    return int(text) if text.lstrip("-").isdigit() else text


def model_spec_bytes(name: str, version: int | str | None = None, signature: str = "") -> bytes:
    """An encoded ModelSpec."""
    if isinstance(version, (int, str, type(None))) and not isinstance(version, bool):
        return _model_spec_bytes(name, version, signature)
    return _model_spec_bytes.__wrapped__(name, version, signature)


@lru_cache(maxsize=256)  # one worker talks to a handful of model versions
def _model_spec_bytes(name: str, version: int | str | None, signature: str) -> bytes:
    out = wire.len_field(1, name.encode("utf-8"))
    version = parse_version(version)
    if isinstance(version, int):
        out += wire.len_field(2, wire.tag(1, wire.VARINT) + wire.varint(version) if version else b"")
    elif isinstance(version, str):
        out += wire.len_field(4, version.encode("utf-8"))
    if signature:
        out += wire.len_field(3, signature.encode("utf-8"))
    return out


def parse_model_spec(buf, offset: int, length: int) -> tuple[str, int | str | None, str]:
    raw = bytes(buf[offset:offset + length])
    return _parse_model_spec(raw) if length <= 512 else _parse_model_spec.__wrapped__(raw)


@lru_cache(maxsize=256)
def _parse_model_spec(buf: bytes) -> tuple[str, int | str | None, str]:
    name, version, signature = "", None, ""
    for number, wt, pos, size in wire.fields(buf, 0, len(buf)):
        if wt != wire.LEN:
            continue
        if number == 1:
            name = bytes(buf[pos:pos + size]).decode("utf-8")
        elif number == 2:
            version = 0
            for n2, wt2, v2, _ in wire.fields(buf, pos, pos + size):
                if n2 == 1 and wt2 == wire.VARINT:
                    version = v2 - (1 << 64) if v2 >= 1 << 63 else v2
        elif number == 4:
            version = bytes(buf[pos:pos + size]).decode("utf-8")
        elif number == 3:
            signature = bytes(buf[pos:pos + size]).decode("utf-8")
    return name, version, signature


def _map_entry_head(map_field: int, key: str, value_size: int) -> bytes:
    """A map<string, TensorProto> entry up to its value: entry prefix, key field, value prefix."""
    key_field = wire.len_field(1, str(key).encode("utf-8"))
    value_prefix = wire.len_prefix(2, value_size)
    entry_len = len(key_field) + len(value_prefix) + value_size
    return wire.len_prefix(map_field, entry_len) + key_field + value_prefix


def _tensor_map_chunks(map_field: int, tensors: Mapping[str, Any], form: str) -> list:
    chunks: list = []
    for key, arr in tensors.items():
        enc = codec.encode_tensor(arr, form=form)
        chunks.append(_map_entry_head(map_field, key, enc.size))
        chunks.extend(enc.chunks)
    return chunks


def frame_predict_request(model: str, version: int | str | None, inputs: Mapping[str, Any], *,
                          signature: str = "", output_filter: Sequence[str] = ()) -> bytes:
    """Serialized PredictRequest: header bytes plus each input's raw `tensor_content`.

    Big requests are written into a reused buffer from `wire.POOL` (warm pages, see BytesPool).
    One plain numeric array (the common case) goes through a cached header: the framing then
    costs a dict lookup, not a walk through every field.
    """
    if not output_filter and len(inputs) == 1:
        (key, arr), = inputs.items()
        if type(arr) is np.ndarray and arr.size and arr.flags.c_contiguous:
            try:
                head = _request_head(model, version, signature, key, arr.dtype, arr.shape)
            except TypeError:  # an unhashable version or key: the general path below
                head = None
            if head is not None:
                return _join_head(head, arr)
    chunks = [wire.len_field(1, model_spec_bytes(model, version, signature))]
    tensor_chunks = _tensor_map_chunks(2, inputs, "content")
    chunks.extend(tensor_chunks)
    for name in output_filter:
        chunks.append(wire.len_field(3, name.encode("utf-8")))
    return wire.join_chunks(chunks)


def _join_head(head: tuple[bytes, np.ndarray], arr: np.ndarray) -> bytes:
    """`head` then `arr`'s raw bytes in one `bytes` (pooled when big): one copy of the payload."""
    raw, head_u8 = head
    total = len(raw) + arr.nbytes
    if total < wire.POOL.min_size:
        return b"".join((raw, memoryview(arr.reshape(-1).view(np.uint8))))
    data, view = wire.POOL.take(total)
    view[:len(raw)] = head_u8
    view[len(raw):] = arr.reshape(-1).view(np.uint8)
    return data


@lru_cache(maxsize=256)
def _request_head(model: str, version: Any, signature: str, key: str, dtype: np.dtype,
                  shape: tuple[int, ...]) -> tuple[bytes, np.ndarray] | None:
    """Everything of a one-input PredictRequest before the payload (as bytes and as a uint8
    array to copy from), or None (general path)."""
    try:
        datatype = codec.datatype_of(dtype)
    except codec.CodecError:
        return None
    if datatype in (codec.DT_STRING, codec.DT_BFLOAT16) or codec._TYPES[datatype][0] != dtype:
        return None  # strings, bfloat16 and big-endian arrays take the general path
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    tensor_head = codec.tensor_head(datatype, shape) + wire.len_prefix(codec.F_CONTENT, nbytes)
    head = (wire.len_field(1, model_spec_bytes(model, version, signature))
            + _map_entry_head(2, key, len(tensor_head) + nbytes) + tensor_head)
    return head, np.frombuffer(head, dtype=np.uint8)


class RequestWriter:
    """A PredictRequest laid out in one private `bytes`, with writable arrays where the inputs go.

    The caller fills `arrays[name]` (e.g. cuts tiles straight into it) and sends `finish()`:
    the payload is written exactly once, with no join copy afterwards. The `bytes` comes from
    `wire.POOL`: a buffer of the same size whose earlier request nobody holds any more.
    """

    def __init__(self, model: str, version: int | str | None, specs: Mapping[str, tuple[Any, tuple[int, ...]]],
                 *, signature: str = "", output_filter: Sequence[str] = ()) -> None:
        layout = []
        total = 0
        head = wire.len_field(1, model_spec_bytes(model, version, signature))
        layout.append((head, None))
        total += len(head)
        for name, (dtype, shape) in specs.items():
            dt = np.dtype(dtype)
            datatype = codec.datatype_of(dt)
            if datatype == codec.DT_STRING:
                raise codec.CodecError("RequestWriter takes numeric inputs only")
            dt = codec._TYPES[datatype][0]
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            tensor_head = codec.tensor_head(datatype, shape) + wire.len_prefix(codec.F_CONTENT, nbytes)
            entry_head = _map_entry_head(2, name, len(tensor_head) + nbytes) + tensor_head
            layout.append((entry_head, (name, dt, tuple(shape), nbytes)))
            total += len(entry_head) + nbytes
        for name in output_filter:  # PredictRequest.output_filter: only these outputs come back
            field_bytes = wire.len_field(3, name.encode("utf-8"))
            layout.append((field_bytes, None))
            total += len(field_bytes)
        self.data, buf = wire.POOL.take(total)
        self.arrays: dict[str, np.ndarray] = {}
        pos = 0
        for head, spec in layout:
            buf[pos:pos + len(head)] = np.frombuffer(head, dtype=np.uint8)
            pos += len(head)
            if spec is not None:
                name, dt, shape, nbytes = spec
                self.arrays[name] = buf[pos:pos + nbytes].view(dt).reshape(shape)
                pos += nbytes
        assert pos == total

    def finish(self) -> bytes:
        """The complete request; the arrays must not be written after this."""
        self.arrays = {}
        data, self.data = self.data, b""  # only the caller (then gRPC) holds it: reusable once sent
        return data


def frame_predict_response(model: str, version: int | str | None, outputs: Mapping[str, Any], *,
                           form: str = "fields", signature: str = DEFAULT_SIGNATURE) -> bytes:
    """Serialized PredictResponse, in TF Serving's default repeated-field form or `content`."""
    chunks = _tensor_map_chunks(1, outputs, form)
    chunks.append(wire.len_field(2, model_spec_bytes(model, version, signature)))
    return wire.join_chunks(chunks)


def _parse_tensor_map_entry(buf, pos: int, size: int) -> tuple[str, np.ndarray]:
    key, value = "", None
    for n2, wt2, p2, s2 in wire.fields(buf, pos, pos + size):
        if n2 == 1 and wt2 == wire.LEN:
            key = bytes(buf[p2:p2 + s2]).decode("utf-8")
        elif n2 == 2 and wt2 == wire.LEN:
            value = codec.decode_tensor(buf, p2, s2)
    if value is None:
        value = codec.decode_tensor(b"")
    return key, value


@dataclass
class PredictRequestView:
    model: str
    version: int | str | None
    signature: str
    inputs: dict[str, np.ndarray]
    output_filter: list[str]


def parse_predict_request(buf) -> PredictRequestView:
    """Decode a PredictRequest (dev server side); arrays are views into `buf`."""
    req = PredictRequestView("", None, "", {}, [])
    for number, wt, pos, size in wire.fields(buf):
        if wt != wire.LEN:
            continue
        if number == 1:
            req.model, req.version, req.signature = parse_model_spec(buf, pos, size)
        elif number == 2:
            key, value = _parse_tensor_map_entry(buf, pos, size)
            req.inputs[key] = value
        elif number == 3:
            req.output_filter.append(bytes(buf[pos:pos + size]).decode("utf-8"))
    return req


def parse_predict_response(buf) -> tuple[dict[str, np.ndarray], tuple[str, int | str | None, str]]:
    """Decode a PredictResponse: (outputs as read-only views where possible, model spec).

    A reply laid out like an earlier one (same outputs, shapes and spec) is read from that
    layout without walking its fields (`layouts`)."""
    known = layouts.read(buf)
    if known is not None:
        return known
    outputs: dict[str, np.ndarray] = {}
    spec: tuple[str, int | str | None, str] = ("", None, "")
    for number, wt, pos, size in wire.fields(buf):
        if wt != wire.LEN:
            continue
        if number == 1:
            key, value = _parse_tensor_map_entry(buf, pos, size)
            outputs[key] = value
        elif number == 2:
            spec = parse_model_spec(buf, pos, size)
    layouts.learn(buf, outputs, spec)
    return outputs, spec


# ----- metadata (generated protobuf classes; small messages) -----

def _pb():
    from .protos import rcserving_pb2

    return rcserving_pb2


def metadata_request_bytes(model: str, version: int | str | None) -> bytes:
    return model_spec_request(model, version) + wire.len_field(2, b"signature_def")


def model_spec_request(model: str, version: int | str | None) -> bytes:
    """A request whose field 1 is a ModelSpec (GetModelMetadata / GetModelStatus)."""
    return wire.len_field(1, model_spec_bytes(model, version))


def _spec_from_info(info: Any) -> TensorSpec:
    if info.tensor_shape.unknown_rank:
        shape: tuple[int, ...] = ()
    else:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    try:
        dtype = codec.numpy_dtype(int(info.dtype))
    except codec.CodecError:
        dtype = np.dtype(object)
    return TensorSpec(dtype, shape)


def parse_metadata_response(buf: bytes, model: str, version: int | str | None) -> ModelMetadata:
    """GetModelMetadataResponse -> ModelMetadata of `serving_default` (else the first signature)."""
    pb = _pb()
    resp = pb.GetModelMetadataResponse.FromString(buf)
    sig_map = pb.SignatureDefMap()
    if "signature_def" in resp.metadata:
        sig_map.ParseFromString(resp.metadata["signature_def"].value)
    names = [n for n in sig_map.signature_def if not n.startswith("__")]
    chosen = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in sig_map.signature_def else (sorted(names) or [""])[0]
    served_version: int | None = None
    if resp.model_spec.HasField("version"):
        served_version = int(resp.model_spec.version.value)
    elif isinstance(parse_version(version), int):
        served_version = parse_version(version)
    meta = ModelMetadata(resp.model_spec.name or model, served_version, signature=chosen)
    if chosen:
        sig = sig_map.signature_def[chosen]
        meta.inputs = {k: _spec_from_info(v) for k, v in sorted(sig.inputs.items())}
        meta.outputs = {k: _spec_from_info(v) for k, v in sorted(sig.outputs.items())}
    return meta


def build_metadata_response(meta: ModelMetadata) -> bytes:
    """Dev server: a GetModelMetadataResponse for `meta` (TF Serving's layout)."""
    pb = _pb()
    sig = pb.SignatureDef(method_name="tensorflow/serving/predict")
    for target, specs in ((sig.inputs, meta.inputs), (sig.outputs, meta.outputs)):
        for key, spec in specs.items():
            info = target[key]
            info.name = f"{key}:0"
            info.dtype = codec.datatype_of(spec.dtype)
            for d in spec.shape:
                info.tensor_shape.dim.add(size=int(d))
    sig_map = pb.SignatureDefMap()
    sig_map.signature_def[meta.signature].CopyFrom(sig)
    resp = pb.GetModelMetadataResponse()
    resp.model_spec.name = meta.name
    if meta.version is not None:
        resp.model_spec.version.value = int(meta.version)
    any_msg = resp.metadata["signature_def"]
    any_msg.type_url = SIGNATURE_DEF_MAP_URL
    any_msg.value = sig_map.SerializeToString()
    return resp.SerializeToString()
