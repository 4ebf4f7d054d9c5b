"""Against the real thing: the official tensorflow-serving-api messages and a Keras SavedModel.

TensorFlow lives in its own venv (`make venv-tf`, created here when missing) so the worker's venv
stays small; these tests run TF-side code in that interpreter and compare bytes and arrays.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from redis_consumer.settings import Settings
from redis_consumer.tfserving import messages
from redis_consumer.tfserving.client import TFServingClient
from redis_consumer.tfserving.tiling import predict_tiled
from tests.helpers.model_server import ModelServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TF_PYTHON = ROOT / ".venv-tf" / "bin" / "python"


@pytest.fixture(scope="module")
def tf_python() -> str:
    """The TensorFlow venv's interpreter, installed on first use (skip only if that is impossible)."""
    if not (ROOT / ".venv-tf" / ".installed").exists() or not TF_PYTHON.exists():
        try:
            out = subprocess.run(["make", "-C", str(ROOT), "venv-tf"], capture_output=True, text=True,
                                 timeout=1500, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot install TensorFlow for the wire-compatibility tests: {exc}")
        if out.returncode:
            pytest.skip("cannot install TensorFlow for the wire-compatibility tests: "
                        + (out.stderr or out.stdout).strip().splitlines()[-1][:300])
    return str(TF_PYTHON)


def run_tf(python: str, script: str, *args: str, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    out = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd="/", check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout


def cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    out = {
        "float32": rng.standard_normal((2, 3, 4)).astype(np.float32),
        "float64": rng.standard_normal((3, 2)),
        "float16": rng.standard_normal((5,)).astype(np.float16),
        "complex64": (rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64),
        "bool": rng.random((3, 3)) > 0.5,
        "scalar": np.asarray(np.float32(2.5)),
        "empty": np.zeros((0, 3), np.float32),
    }
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        info = np.iinfo(name)
        a = rng.integers(info.min, info.max, size=(2, 5), dtype=name, endpoint=True)
        a.reshape(-1)[:2] = [info.min, info.max]
        out[name] = a
    return out


# Runs in the TF venv: parse our bytes with the official classes, and write theirs for us.
TF_WIRE_SCRIPT = r"""
import sys, json
from pathlib import Path
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, get_model_metadata_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

work = Path(sys.argv[1])
arrays = dict(np.load(work / "cases.npz", allow_pickle=True))
report = {}

def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)

for name, arr in arrays.items():
    if name == "strings":
        arr = arr.astype(object)
    req = predict_pb2.PredictRequest.FromString((work / f"req_{name}.bin").read_bytes())
    ok = req.model_spec.name == "M" and req.model_spec.version.value == 3
    ok = ok and same(tf.make_ndarray(req.inputs["x"]), arr)
    for form in ("fields", "content"):
        resp = predict_pb2.PredictResponse.FromString((work / f"resp_{form}_{name}.bin").read_bytes())
        ok = ok and resp.model_spec.name == "M" and same(tf.make_ndarray(resp.outputs["y"]), arr)
    report[name] = bool(ok)

bf = predict_pb2.PredictRequest.FromString((work / "req_bfloat16.bin").read_bytes())
report["bfloat16"] = bool(np.array_equal(tf.make_ndarray(bf.inputs["x"]).astype(np.float32),
                                         np.load(work / "bfloat16.npy")))

meta = get_model_metadata_pb2.GetModelMetadataResponse.FromString((work / "metadata.bin").read_bytes())
sig_map = get_model_metadata_pb2.SignatureDefMap()
any_msg = meta.metadata["signature_def"]
report["metadata_any_type"] = any_msg.Is(sig_map.DESCRIPTOR) and any_msg.Unpack(sig_map)
info = sig_map.signature_def["serving_default"].inputs["image"]
report["metadata_fields"] = (meta.model_spec.version.value == 7 and info.dtype == types_pb2.DT_FLOAT
                             and [d.size for d in info.tensor_shape.dim] == [-1, 64, 64, 1])

# theirs -> ours
theirs = predict_pb2.PredictRequest()
theirs.model_spec.name = "Theirs"
theirs.model_spec.version.value = 5
theirs.model_spec.signature_name = "serving_default"
for name, arr in arrays.items():
    if name != "strings":
        theirs.inputs[name].CopyFrom(tf.make_tensor_proto(arr))
theirs.inputs["strings"].CopyFrom(tf.make_tensor_proto(arrays["strings"].astype(object)))
(work / "theirs_req.bin").write_bytes(theirs.SerializeToString())

resp = predict_pb2.PredictResponse()
resp.model_spec.name = "Theirs"
resp.model_spec.version.value = 5
f32 = arrays["float32"]
t = resp.outputs["float32"]; t.dtype = types_pb2.DT_FLOAT; t.float_val.extend(f32.ravel().tolist())
for d in f32.shape:
    t.tensor_shape.dim.add(size=d)
for name, field, dt in (("int32", "int_val", types_pb2.DT_INT32), ("int64", "int64_val", types_pb2.DT_INT64),
                        ("uint8", "int_val", types_pb2.DT_UINT8), ("bool", "bool_val", types_pb2.DT_BOOL),
                        ("float64", "double_val", types_pb2.DT_DOUBLE)):
    arr = arrays[name]
    t = resp.outputs[name]; t.dtype = dt
    getattr(t, field).extend(arr.ravel().tolist())
    for d in arr.shape:
        t.tensor_shape.dim.add(size=d)
h = arrays["float16"]
t = resp.outputs["float16"]; t.dtype = types_pb2.DT_HALF; t.half_val.extend(h.view(np.uint16).tolist())
t.tensor_shape.dim.add(size=h.shape[0])
(work / "theirs_resp.bin").write_bytes(resp.SerializeToString())

sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
sig.inputs["pixels"].name = "serving_default_pixels:0"
sig.inputs["pixels"].dtype = types_pb2.DT_UINT8
for d in (-1, -1, -1, 2):
    sig.inputs["pixels"].tensor_shape.dim.add(size=d)
sig.outputs["mask"].dtype = types_pb2.DT_FLOAT
sig.outputs["mask"].tensor_shape.unknown_rank = True
smap = get_model_metadata_pb2.SignatureDefMap()
smap.signature_def["serving_default"].CopyFrom(sig)
smap.signature_def["__saved_model_init_op"].CopyFrom(meta_graph_pb2.SignatureDef())
mresp = get_model_metadata_pb2.GetModelMetadataResponse()
mresp.model_spec.name = "Theirs"
mresp.model_spec.version.value = 5
mresp.metadata["signature_def"].Pack(smap)
(work / "theirs_metadata.bin").write_bytes(mresp.SerializeToString())
print(json.dumps(report))
"""


def test_wire_compatibility_with_official_messages(tf_python, tmp_path):
    import json

    arrays = cases()
    arrays["strings"] = np.array([[b"a", b"\x00\xffz"], [b"", "\u00e9".encode()]], dtype=object)
    np.savez(tmp_path / "cases.npz", **arrays)
    for name, arr in arrays.items():
        (tmp_path / f"req_{name}.bin").write_bytes(messages.frame_predict_request("M", 3, {"x": arr}))
        for form in ("fields", "content"):
            (tmp_path / f"resp_{form}_{name}.bin").write_bytes(
                messages.frame_predict_response("M", 3, {"y": arr}, form=form))
    bf = np.array([1.0, -2.5, 0.15625, 3e38], np.float32)
    from redis_consumer.tfserving import codec

    np.save(tmp_path / "bfloat16.npy", codec.bfloat16_bits_to_float32(codec.float32_to_bfloat16_bits(bf)))
    req_bf = codec.tensor_bytes(bf, dtype="bfloat16")
    from redis_consumer.tfserving import wire

    (tmp_path / "req_bfloat16.bin").write_bytes(
        wire.len_field(1, messages.model_spec_bytes("M", 3))
        + wire.len_field(2, wire.len_field(1, b"x") + wire.len_field(2, req_bf)))
    meta = messages.ModelMetadata("Seg", 7, {"image": messages.TensorSpec(np.dtype("float32"), (-1, 64, 64, 1))},
                                  {"probability": messages.TensorSpec(np.dtype("float32"), (-1, 64, 64, 1))})
    (tmp_path / "metadata.bin").write_bytes(messages.build_metadata_response(meta))

    report = json.loads(run_tf(tf_python, TF_WIRE_SCRIPT, str(tmp_path)).strip().splitlines()[-1])
    assert report == {k: True for k in report} and len(report) == len(arrays) + 3, report

    # theirs -> ours
    view = messages.parse_predict_request((tmp_path / "theirs_req.bin").read_bytes())
    assert (view.model, view.version, view.signature) == ("Theirs", 5, "serving_default")
    for name, arr in arrays.items():
        got = view.inputs[name]
        assert got.shape == arr.shape, name
        if name == "strings":
            assert got.tolist() == arr.tolist()
        else:
            assert got.dtype == arr.dtype, name
            np.testing.assert_array_equal(got, arr)
    outputs, spec = messages.parse_predict_response((tmp_path / "theirs_resp.bin").read_bytes())
    assert spec[:2] == ("Theirs", 5)
    for name in ("float32", "int32", "int64", "uint8", "bool", "float64", "float16"):
        assert outputs[name].dtype == arrays[name].dtype, name
        np.testing.assert_array_equal(outputs[name], arrays[name])
    meta = messages.parse_metadata_response((tmp_path / "theirs_metadata.bin").read_bytes(), "Theirs", 5)
    assert meta.version == 5 and meta.signature == "serving_default"
    assert meta.inputs == {"pixels": messages.TensorSpec(np.dtype("uint8"), (-1, -1, -1, 2))}
    assert meta.outputs["mask"].shape == ()


KERAS_SCRIPT = r"""
import sys
from pathlib import Path
import numpy as np
import keras

root = Path(sys.argv[1])
keras.utils.set_random_seed(3)
inp = keras.Input(shape=(None, None, 1), name="image")
x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
out = keras.layers.Conv2D(2, 3, padding="same", activation="sigmoid", name="mask")(x)
model = keras.Model(inp, out)
model.export(str(root / "models" / "TinyConv" / "1"), format="tf_saved_model", verbose=False)
images = np.random.default_rng(0).random((3, 40, 56, 1)).astype(np.float32)
np.savez(root / "io.npz", images=images, expected=model.predict(images, verbose=0))
"""


def test_keras_saved_model_served_by_dev_server(tf_python, tmp_path):
    run_tf(tf_python, KERAS_SCRIPT, str(tmp_path))
    data = np.load(tmp_path / "io.npz")
    server = ModelServer(python=tf_python, model_dir=str(tmp_path / "models"), max_batch_size=2)
    server.start(timeout=120)
    try:
        client = TFServingClient(Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=server.port,
                                                   GRPC_BACKOFF=0.01))
        meta = client.get_metadata("TinyConv", 1)
        assert len(meta.inputs) == 1 and next(iter(meta.inputs.values())).shape == (-1, -1, -1, 1)
        got = client.predict("TinyConv", 1, data["images"])  # 3 samples, server limit 2: split
        if isinstance(got, dict):
            got = next(iter(got.values()))
        np.testing.assert_allclose(got, data["expected"], rtol=1e-5, atol=1e-6)
        assert client.max_batch["TinyConv"] == 2
        tiled = predict_tiled(client, "TinyConv", 1, data["images"], tile_shape=(32, 32), overlap=8)
        np.testing.assert_allclose(tiled, data["expected"], rtol=1e-5, atol=1e-6)  # receptive field 5 < 8/2+1
        client.close()
    finally:
        server.stop()
