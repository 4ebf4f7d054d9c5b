"""Tensor codec and message framing: every framed message is checked against the protobuf parser."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from redis_consumer.tfserving import codec, messages, wire
from redis_consumer.tfserving.protos import rcserving_pb2 as pb

NUMERIC = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64", "bool", "complex64", "complex128"]


def sample(dtype: str, shape=(3, 5, 2)) -> np.ndarray:
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        a = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        if a.size >= 2:  # extremes: 10-byte varints for negative values
            a.reshape(-1)[:2] = [info.min, info.max]
        return a
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    return (rng.standard_normal(shape) * 1000).astype(dt)


def pb_values(msg: pb.TensorProto) -> np.ndarray:
    """What protobuf's own parser sees in a TensorProto, as numpy (independent of our decoder)."""
    shape = tuple(d.size for d in msg.tensor_shape.dim)
    dt = codec.numpy_dtype(msg.dtype)
    if msg.tensor_content:
        raw = np.frombuffer(msg.tensor_content, dtype=codec._TYPES[msg.dtype][0])
    elif msg.dtype == codec.DT_HALF:
        raw = np.array(list(msg.half_val), dtype=np.uint16).view(np.float16)
    elif msg.dtype in (codec.DT_COMPLEX64, codec.DT_COMPLEX128):
        vals = msg.scomplex_val if msg.dtype == codec.DT_COMPLEX64 else msg.dcomplex_val
        raw = np.array(list(vals), dtype="f4" if msg.dtype == codec.DT_COMPLEX64 else "f8").view(dt)
    else:
        field = {1: "float_val", 2: "double_val", 9: "int64_val", 10: "bool_val", 22: "uint32_val",
                 23: "uint64_val"}.get(msg.dtype, "int_val")
        raw = np.array(list(getattr(msg, field)), dtype=dt)
    return raw.astype(dt).reshape(shape)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("form", ["content", "fields"])
def test_round_trip_matches_protobuf_parser(dtype, form):
    a = sample(dtype)
    data = codec.tensor_bytes(a, form=form)
    msg = pb.TensorProto.FromString(data)
    assert msg.dtype == codec.datatype_of(a.dtype)
    assert [d.size for d in msg.tensor_shape.dim] == list(a.shape)
    assert bool(msg.tensor_content) == (form == "content")
    np.testing.assert_array_equal(pb_values(msg), a)
    back = codec.decode_tensor(data)
    assert back.dtype == a.dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)
    # protobuf's own re-serialization decodes to the same array
    np.testing.assert_array_equal(codec.decode_tensor(msg.SerializeToString()), a)


@pytest.mark.parametrize("form", ["content", "fields"])
def test_zero_copy_views_for_raw_layouts(form):
    a = sample("float32", (4, 8, 8, 1))
    data = codec.tensor_bytes(a, form=form)
    back = codec.decode_tensor(data)
    assert not back.flags.writeable
    assert np.shares_memory(back, np.frombuffer(data, np.uint8))


def test_bool_fields_are_viewed_in_place():
    a = sample("bool", (100,))
    data = codec.tensor_bytes(a, form="fields")
    assert np.shares_memory(codec.decode_tensor(data), np.frombuffer(data, np.uint8))


@pytest.mark.parametrize("form", ["content", "fields"])
@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)])
def test_empty_tensors(form, shape):
    a = np.zeros(shape, dtype=np.float32)
    data = codec.tensor_bytes(a, form=form)
    assert [d.size for d in pb.TensorProto.FromString(data).tensor_shape.dim] == list(shape)
    back = codec.decode_tensor(data)
    assert back.shape == shape and back.dtype == np.float32


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64", "uint8", "bool", "float16"])
@pytest.mark.parametrize("form", ["content", "fields"])
def test_scalars(dtype, form):
    a = np.asarray(sample(dtype, (1,))[0])
    data = codec.tensor_bytes(a, form=form)
    assert len(pb.TensorProto.FromString(data).tensor_shape.dim) == 0
    back = codec.decode_tensor(data)
    assert back.shape == () and back == a


def test_non_contiguous_and_big_endian_inputs():
    base = sample("float32", (6, 10))
    for a in (base[:, ::2], base.T, base.astype(">f4"), sample("int32", (4, 4)).astype(">i4")[::2]):
        back = codec.decode_tensor(codec.tensor_bytes(a))
        assert back.dtype.byteorder in ("<", "=", "|")
        np.testing.assert_array_equal(back, a)
        np.testing.assert_array_equal(pb_values(pb.TensorProto.FromString(codec.tensor_bytes(a))), a)


def test_strings():
    a = np.array([[b"abc", "d\u00e9f"], [b"", b"\x00\xff"]], dtype=object)
    data = codec.tensor_bytes(a)
    msg = pb.TensorProto.FromString(data)
    assert msg.dtype == codec.DT_STRING and list(msg.string_val) == [b"abc", "d\u00e9f".encode(), b"", b"\x00\xff"]
    back = codec.decode_tensor(data)
    assert back.shape == (2, 2) and back[0, 1] == "d\u00e9f".encode()
    with pytest.raises(codec.CodecError):
        codec.tensor_bytes(np.array([1, "x"], dtype=object))


@pytest.mark.parametrize("form", ["content", "fields"])
def test_bfloat16(form):
    a = np.array([[1.0, -2.5, 3.140625, 1e30], [0.0, -0.0, np.inf, 65504.0]], dtype=np.float32)
    data = codec.tensor_bytes(a, form=form, dtype="bfloat16")
    msg = pb.TensorProto.FromString(data)
    assert msg.dtype == codec.DT_BFLOAT16
    back = codec.decode_tensor(data)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, a, rtol=1 / 128)
    assert back[0, 0] == 1.0 and back[0, 1] == -2.5 and np.isinf(back[1, 2])


def test_compact_repeated_form_repeats_last_value():
    """TF may send fewer values than elements (constant tails): the last value fills the rest."""
    msg = pb.TensorProto(dtype=codec.DT_FLOAT, float_val=[1.5, 7.0])
    msg.tensor_shape.dim.add(size=2)
    msg.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(codec.decode_tensor(msg.SerializeToString()),
                                  [[1.5, 7, 7], [7, 7, 7]])
    zero = pb.TensorProto(dtype=codec.DT_INT32)
    zero.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(codec.decode_tensor(zero.SerializeToString()), [0, 0, 0])


def test_unpacked_repeated_fields_are_accepted():
    """Proto parsers must accept unpacked encodings of packed fields; build them by hand."""
    shape = codec.shape_bytes((3,))
    head = wire.tag(1, wire.VARINT) + wire.varint(codec.DT_FLOAT) + wire.len_field(2, shape)
    body = b"".join(wire.tag(5, wire.I32) + np.float32(v).tobytes() for v in (1, 2, 3))
    np.testing.assert_array_equal(codec.decode_tensor(head + body), [1, 2, 3])
    head = wire.tag(1, wire.VARINT) + wire.varint(codec.DT_INT32) + wire.len_field(2, shape)
    body = b"".join(wire.tag(7, wire.VARINT) + wire.varint(v) for v in (-1, 300, 5))
    np.testing.assert_array_equal(codec.decode_tensor(head + body), [-1, 300, 5])


def test_varint_vectors_match_protobuf():
    values = np.array([0, 1, 127, 128, 300, 2**31 - 1, -1, -(2**31), 2**62, -(2**63)], dtype=np.int64)
    msg = pb.TensorProto(int64_val=values.tolist())
    packed = wire.encode_varints(values)
    ours = wire.tag(10, wire.LEN) + wire.varint(len(packed)) + packed
    assert ours == msg.SerializeToString()
    np.testing.assert_array_equal(wire.decode_varints(packed, 0, len(packed)).view(np.int64), values)


def test_malformed_input_is_rejected():
    with pytest.raises(ValueError):
        codec.decode_tensor(b"\x08\x01\x22\x10\x00")  # truncated tensor_content
    bad = pb.TensorProto(dtype=codec.DT_FLOAT, tensor_content=b"\x00" * 6)
    bad.tensor_shape.dim.add(size=2)
    with pytest.raises(codec.CodecError):
        codec.decode_tensor(bad.SerializeToString())
    with pytest.raises(codec.CodecError):
        codec.datatype_of(np.dtype("datetime64[s]"))


def test_predict_request_framing_parses_with_protobuf():
    inputs = {"image": sample("float32", (2, 16, 16, 1)), "scale": np.array([1.0, 2.0]),
              "label": np.array([b"a", b"b"], dtype=object)}
    data = messages.frame_predict_request("NuclearSegmentation", 3, inputs, signature="serving_default",
                                          output_filter=["probability"])
    req = pb.PredictRequest.FromString(data)
    assert req.model_spec.name == "NuclearSegmentation" and req.model_spec.version.value == 3
    assert req.model_spec.signature_name == "serving_default"
    assert list(req.output_filter) == ["probability"]
    assert set(req.inputs) == set(inputs)
    np.testing.assert_array_equal(pb_values(req.inputs["image"]), inputs["image"])
    assert req.inputs["image"].tensor_content  # requests carry raw bytes
    # and protobuf's own bytes (any field order) parse with our parser
    view = messages.parse_predict_request(req.SerializeToString())
    assert (view.model, view.version, view.signature) == ("NuclearSegmentation", 3, "serving_default")
    np.testing.assert_array_equal(view.inputs["image"], inputs["image"])
    assert list(view.inputs["label"]) == [b"a", b"b"]


@pytest.mark.parametrize("version,expect", [(None, None), ("", None), ("7", 7), (0, 0), ("stable", "stable")])
def test_model_spec_versions(version, expect):
    req = pb.PredictRequest.FromString(messages.frame_predict_request("m", version, {}))
    choice = req.model_spec.WhichOneof("version_choice")
    if expect is None:
        assert choice is None
    elif isinstance(expect, int):
        assert choice == "version" and req.model_spec.version.value == expect
    else:
        assert req.model_spec.version_label == expect
    assert messages.parse_predict_request(req.SerializeToString()).version == expect


@pytest.mark.parametrize("form", ["content", "fields"])
def test_predict_response_round_trip(form):
    outputs = {"probability": sample("float32", (2, 8, 8, 1)), "labels": sample("int32", (2, 8, 8))}
    data = messages.frame_predict_response("Seg", 1, outputs, form=form)
    resp = pb.PredictResponse.FromString(data)
    assert resp.model_spec.name == "Seg" and resp.model_spec.version.value == 1
    for k, v in outputs.items():
        np.testing.assert_array_equal(pb_values(resp.outputs[k]), v)
    for raw in (data, resp.SerializeToString()):
        decoded, spec = messages.parse_predict_response(raw)
        assert spec[0] == "Seg" and spec[1] == 1
        for k, v in outputs.items():
            np.testing.assert_array_equal(decoded[k], v)


def test_metadata_round_trip_uses_tf_serving_type_url():
    meta = messages.ModelMetadata("Seg", 2, {"image": messages.TensorSpec(np.dtype("float32"), (-1, 256, 256, 1))},
                                  {"probability": messages.TensorSpec(np.dtype("float32"), (-1, 256, 256, 3))})
    data = messages.build_metadata_response(meta)
    resp = pb.GetModelMetadataResponse.FromString(data)
    assert resp.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    back = messages.parse_metadata_response(data, "Seg", 2)
    assert back.version == 2 and back.inputs == meta.inputs and back.outputs == meta.outputs
    assert messages.ModelMetadata.from_json(back.to_json()) == back


def test_import_leaves_tensorflow_out():
    code = ("import sys, redis_consumer.tfserving.client, redis_consumer.tfserving.tiling, "
            "redis_consumer.tfserving.codec, redis_consumer.tfserving.protos.rcserving_pb2;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','tensorflow_serving','keras')];"
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_generated_module_is_up_to_date(tmp_path):
    """The committed rcserving_pb2.py is what the committed generator makes from the .proto."""
    import grpc_tools  # noqa: F401 - the dev extra installs it; without it this test must fail, not skip

    from redis_consumer.tfserving.protos import generate

    fresh = generate.generate(tmp_path)
    assert fresh.read_text() == (generate.HERE / "rcserving_pb2.py").read_text()


def test_request_writer_matches_framed_request():
    x = sample("float32", (3, 8, 8, 2))
    writer = messages.RequestWriter("Seg", 2, {"image": (x.dtype, x.shape), "scale": (np.dtype("<f8"), (3,))})
    writer.arrays["image"][...] = x
    writer.arrays["scale"][...] = [1, 2, 3]
    data = writer.finish()
    assert isinstance(data, bytes) and writer.arrays == {}
    expected = messages.frame_predict_request("Seg", 2, {"image": x, "scale": np.array([1.0, 2.0, 3.0])})
    assert data == expected
    req = pb.PredictRequest.FromString(data)
    np.testing.assert_array_equal(pb_values(req.inputs["image"]), x)


def test_request_writer_with_an_output_filter_matches_framed_request():
    x = sample("float32", (2, 4, 4, 1))
    writer = messages.RequestWriter("Mesmer", 9, {"input_0": (x.dtype, x.shape)},
                                    output_filter=["semantic_0", "semantic_1"])
    writer.arrays["input_0"][...] = x
    data = writer.finish()
    assert data == messages.frame_predict_request("Mesmer", 9, {"input_0": x},
                                                  output_filter=["semantic_0", "semantic_1"])
    req = pb.PredictRequest.FromString(data)
    assert list(req.output_filter) == ["semantic_0", "semantic_1"]
    np.testing.assert_array_equal(pb_values(req.inputs["input_0"]), x)


def test_fresh_bytes_are_private_objects():
    a, view_a = wire.fresh_bytes(64)
    b, view_b = wire.fresh_bytes(64)
    view_a[:] = 1
    view_b[:] = 2
    assert a == b"\x01" * 64 and b == b"\x02" * 64
    tiny, view = wire.fresh_bytes(1)
    view[:] = 7
    assert tiny == b"\x00" and bytes(1) == b"\x00"  # cached 1-byte objects are never written


def test_package_exports_are_lazy():
    code = ("import sys, redis_consumer.tfserving as t; assert 'grpc' not in sys.modules; "
            "assert t.get_client is __import__('redis_consumer.tfserving.client', fromlist=['x']).get_client; "
            "from redis_consumer.tfserving import predict_tiled, ModelMetadata, CALL_OBSERVERS")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
