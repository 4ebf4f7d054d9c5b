"""Replies read from a learned layout (tfserving.layouts) decode exactly as a full parse would."""

from __future__ import annotations

import numpy as np
import pytest

from redis_consumer.tfserving import codec, layouts, messages
from redis_consumer.tfserving.protos import rcserving_pb2 as pb


@pytest.fixture(autouse=True)
def _fresh_layouts():
    layouts._LAYOUTS.clear()
    yield
    layouts._LAYOUTS.clear()


def values(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, 200, shape).astype(dt)
    return (rng.standard_normal(shape) * 100).astype(dt)


def protobuf_view(data: bytes, name: str) -> np.ndarray:
    """The output as protobuf's own parser reads it (independent of our decoder)."""
    t = pb.PredictResponse.FromString(data).outputs[name]
    dt = codec.numpy_dtype(t.dtype)
    shape = tuple(d.size for d in t.tensor_shape.dim)
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dt).reshape(shape)
    field = {codec.DT_FLOAT: "float_val", codec.DT_DOUBLE: "double_val", codec.DT_INT32: "int_val"}.get(t.dtype)
    if field is None:  # complex64 in scomplex_val: pairs of float parts
        return np.array(list(t.scomplex_val), np.float32).view(dt).reshape(shape)
    return np.array(list(getattr(t, field)), dt).reshape(shape)


@pytest.mark.parametrize("dtype,form", [("float32", "fields"), ("float32", "content"), ("float64", "fields"),
                                        ("complex64", "fields"), ("float16", "content"), ("uint8", "content"),
                                        ("int32", "content")])
def test_a_reply_like_an_earlier_one_is_read_from_its_layout_with_its_own_values(dtype, form):
    first = messages.frame_predict_response("Seg", 3, {"out": values(dtype, (2, 16, 16, 1), 1)}, form=form)
    messages.parse_predict_response(first)
    second_values = values(dtype, (2, 16, 16, 1), 2)
    second = messages.frame_predict_response("Seg", 3, {"out": second_values}, form=form)
    assert layouts.read(second) is not None  # the fast path answers this one
    outputs, spec = messages.parse_predict_response(second)
    assert spec == ("Seg", 3, "serving_default")
    out = outputs["out"]
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 16, 16, 1)
    np.testing.assert_array_equal(out, second_values)
    np.testing.assert_array_equal(out, protobuf_view(second, "out"))
    assert np.shares_memory(out, np.frombuffer(second, np.uint8)) and not out.flags.writeable


def test_same_length_replies_with_other_shapes_names_or_versions_are_parsed_in_full():
    replies = [("Seg1", 1, (2, 8, 1)), ("Seg1", 1, (8, 2, 1)), ("Seg2", 1, (2, 8, 1)), ("Seg1", 2, (2, 8, 1))]
    framed = []
    for k, (model, version, shape) in enumerate(replies):
        arr = values("float32", shape, k)
        framed.append((messages.frame_predict_response(model, version, {"out": arr}), model, version, arr))
    assert len({len(data) for data, *_ in framed}) == 1  # one length: only the bytes tell them apart
    for _ in range(2):  # the second round may come from learned layouts
        for data, model, version, arr in framed:
            outputs, spec = messages.parse_predict_response(data)
            assert spec[:2] == (model, version)
            assert outputs["out"].shape == arr.shape
            np.testing.assert_array_equal(outputs["out"], arr)


def test_varint_and_bool_outputs_are_never_read_from_a_layout():
    labels = values("int32", (4, 4), 1)
    first = messages.frame_predict_response("Seg", 1, {"labels": labels, "p": values("float32", (4, 4), 1)})
    messages.parse_predict_response(first)
    assert layouts.read(first) is None  # int_val varints are decoded, not viewed
    mask = messages.frame_predict_response("Seg", 1, {"mask": np.eye(4, dtype=bool)}, form="content")
    messages.parse_predict_response(mask)
    assert layouts.read(mask) is None
    other = values("int32", (4, 4), 2)
    second = messages.frame_predict_response("Seg", 1, {"labels": other, "p": values("float32", (4, 4), 2)})
    np.testing.assert_array_equal(messages.parse_predict_response(second)[0]["labels"], other)


def test_several_outputs_keep_their_order_and_values():
    def reply(seed):
        outs = {"zeta": values("float32", (1, 8, 8, 2), seed), "alpha": values("float32", (1, 8, 8, 1), seed + 9)}
        return outs, messages.frame_predict_response("Mesmer", 9, outs, form="content")

    messages.parse_predict_response(reply(1)[1])
    expected, data = reply(2)
    assert layouts.read(data) is not None
    outputs, _ = messages.parse_predict_response(data)
    assert list(outputs) == ["zeta", "alpha"]  # message order, as the full parse gives
    for name, arr in expected.items():
        np.testing.assert_array_equal(outputs[name], arr)


def test_a_changed_header_byte_is_not_matched_and_fails_the_full_parse():
    arr = values("float32", (2, 8, 8, 1), 1)
    good = messages.frame_predict_response("Seg", 1, {"out": arr}, form="content")
    messages.parse_predict_response(good)
    dims = codec.shape_bytes((2, 8, 8, 1))
    at = good.index(dims)
    bad = bytearray(good)
    bad[at + len(dims) - 1] = 2  # the last dim says 2: the payload no longer fits the shape
    bad = bytes(bad)
    assert layouts.read(bad) is None
    with pytest.raises(codec.CodecError, match="tensor_content has"):
        messages.parse_predict_response(bad)


def test_buffers_other_than_bytes_take_the_full_parse():
    arr = values("float32", (2, 8, 8, 1), 1)
    data = messages.frame_predict_response("Seg", 1, {"out": arr})
    messages.parse_predict_response(data)
    for buf in (bytearray(data), memoryview(data)):
        assert layouts.read(buf) is None
        np.testing.assert_array_equal(messages.parse_predict_response(buf)[0]["out"], arr)


def test_the_cache_stays_bounded():
    for n in range(1, 3 * layouts._MAX):
        messages.parse_predict_response(messages.frame_predict_response("M", 1, {"o": np.zeros(n, np.float32)}))
    assert 0 < len(layouts._LAYOUTS) <= layouts._MAX
    assert all(len(v) <= layouts._PER_LENGTH for v in layouts._LAYOUTS.values())
