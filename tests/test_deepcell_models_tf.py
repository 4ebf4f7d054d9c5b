"""The DeepCell-signature dev models against real TensorFlow SavedModels with the same SignatureDefs.

In the TensorFlow venv (`make venv-tf`, built on first use like tests/test_tfserving_tf.py), tiny
models are exported with `tf.saved_model.save` and a `serving_default` tf.function whose inputs
carry the served names and which returns a dict of the served output names (facts sheet §8).
The dev server loads them with `--model-dir` (a SavedModel replaces the built-in model of the same
name and version); their GetModelMetadata must equal the numpy dev models' exactly, and they
answer Predict with the declared head shapes.
"""

from __future__ import annotations

import numpy as np
import pytest

from redis_consumer.settings import Settings
from redis_consumer.tfserving.client import TFServingClient
from redis_consumer.tfserving.deepcell_models import deepcell_models
from tests.helpers.model_server import ModelServer
from tests.test_tfserving_tf import run_tf, tf_python  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

# Runs in the TF venv. Small real layers (1x1 convolutions, dense, softmax); weights do not matter.
EXPORT_SCRIPT = r"""
import sys
from pathlib import Path
import tensorflow as tf

root = Path(sys.argv[1])
tf.random.set_seed(0)
F = tf.float32

def w(*shape):
    return tf.Variable(tf.random.normal(shape, stddev=0.1))

def conv1x1(x, k):  # (..., C) @ (C, K)
    return tf.einsum("bhwc,ck->bhwk", x, k)

def save(name, version, module, fn):
    module.serve = fn
    tf.saved_model.save(module, str(root / name / str(version)), signatures={"serving_default": fn})

def panoptic(name, version, channels, heads):
    m = tf.Module()
    m.k = [w(channels, c) for c in heads]
    @tf.function(input_signature=[tf.TensorSpec((None, 256, 256, channels), F, name="input_0")])
    def fn(input_0):
        out = {}
        for i, (k, c) in enumerate(zip(m.k, heads)):
            y = conv1x1(input_0, k)
            out[f"semantic_{i}"] = tf.nn.relu(y) if c == 1 else tf.nn.softmax(y, axis=-1)
        return out
    save(name, version, m, fn)

panoptic("NuclearSegmentation", 6, 1, [1, 1])
panoptic("CytoplasmSegmentation", 5, 1, [1, 1])
panoptic("PhaseCytoSegmentation", 0, 1, [1, 1])
panoptic("MultiplexSegmentation", 9, 2, [1, 3, 1, 3])

spot = tf.Module()
spot.kc, spot.ko = w(1, 2), w(1, 2)
@tf.function(input_signature=[tf.TensorSpec((None, 128, 128, 1), F, name="input_1")])
def spot_fn(input_1):
    return {"classification": tf.nn.softmax(conv1x1(input_1, spot.kc), axis=-1),
            "offset_regression": conv1x1(input_1, spot.ko)}
save("SpotDetection", 3, spot, spot_fn)

ne = tf.Module()
ne.k = w(32 * 32 + 3 + 2, 64)
@tf.function(input_signature=[tf.TensorSpec((None, None, 32, 32, 1), F, name="encoder_app_input"),
                              tf.TensorSpec((None, None, 3), F, name="encoder_morph_input"),
                              tf.TensorSpec((None, None, 2), F, name="encoder_centroid_input"),
                              tf.TensorSpec((None, None, None), F, name="encoder_adj_input")])
def ne_fn(encoder_app_input, encoder_morph_input, encoder_centroid_input, encoder_adj_input):
    s = tf.shape(encoder_app_input)
    app = tf.reshape(encoder_app_input, tf.stack([s[0], s[1], 32 * 32]))
    x = tf.concat([app, encoder_morph_input, encoder_centroid_input], axis=-1)
    x = tf.nn.relu(tf.einsum("fmd,de->fme", x, ne.k))
    x = tf.nn.relu(tf.einsum("fmn,fne->fme", encoder_adj_input, x))  # one graph step
    return {"encoder_centroid_input": tf.identity(encoder_centroid_input), "relu_nef": x}
save("NuclearTrackingNE", 6, ne, ne_fn)

inf = tf.Module()
inf.k = w(64 + 2, 3)
@tf.function(input_signature=[tf.TensorSpec((None, None, None, 64), F, name="current_embeddings"),
                              tf.TensorSpec((None, None, None, 2), F, name="current_centroids"),
                              tf.TensorSpec((None, 1, None, 64), F, name="future_embeddings"),
                              tf.TensorSpec((None, 1, None, 2), F, name="future_centroids")])
def inf_fn(current_embeddings, current_centroids, future_embeddings, future_centroids):
    cur = tf.concat([current_embeddings[:, -1], current_centroids[:, -1]], axis=-1)  # last frame (B,T,66)
    fut = tf.concat([future_embeddings, future_centroids], axis=-1)  # (B,1,N,66)
    diff = cur[:, None, :, None, :] - fut[:, :, None, :, :]  # (B,1,T,N,66): the 1 is the future frame
    return {"tracking_decoder": tf.nn.softmax(tf.einsum("btnmd,dk->btnmk", diff, inf.k), axis=-1)}
save("NuclearTrackingInf", 6, inf, inf_fn)

scale = tf.Module()
scale.k = w(1, 1)
@tf.function(input_signature=[tf.TensorSpec((None, 256, 256, 1), F, name="input_0")])
def scale_fn(input_0):
    return {"scale": tf.reduce_mean(conv1x1(input_0, scale.k), axis=[1, 2])}
save("ScaleDetection", 1, scale, scale_fn)
print("exported")
"""


def test_saved_models_have_the_dev_models_signatures(tf_python, tmp_path):  # noqa: F811
    run_tf(tf_python, EXPORT_SCRIPT, str(tmp_path / "models"), timeout=400)
    numpy_models = {(m.name, m.version): m.metadata() for m in deepcell_models()}
    server = ModelServer(python=tf_python, model_dir=str(tmp_path / "models"), max_batch_size=16)
    server.start(timeout=180)
    try:
        client = TFServingClient(Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=server.port, GRPC_BACKOFF=0.01))
        for (name, version), expected in numpy_models.items():
            got = client.get_metadata(name, version)
            assert got.inputs == dict(sorted(expected.inputs.items())), name
            assert got.outputs == dict(sorted(expected.outputs.items())), name
        # They really are the SavedModels (TF), and they answer with the declared head shapes.
        tile = np.random.default_rng(0).random((3, 256, 256, 1), dtype=np.float32)
        heads = client.predict("NuclearSegmentation", 6, tile)
        assert sorted(heads) == ["semantic_0", "semantic_1"]
        assert all(h.shape == (3, 256, 256, 1) for h in heads.values())
        stats = server.stats()["models"]
        assert stats["NuclearSegmentation:6"]["batches"] == 1 and stats["NuclearSegmentation:1"]["batches"] == 0
        mesmer = client.predict("MultiplexSegmentation", 9, np.zeros((2, 256, 256, 2), np.float32))
        assert [mesmer[k].shape[-1] for k in sorted(mesmer)] == [1, 3, 1, 3]
        np.testing.assert_allclose(mesmer["semantic_1"].sum(-1), 1.0, rtol=1e-5)
        ne = client.predict("NuclearTrackingNE", 6, {
            "encoder_app_input": np.zeros((4, 5, 32, 32, 1), np.float32),
            "encoder_morph_input": np.ones((4, 5, 3), np.float32),
            "encoder_centroid_input": np.arange(40, dtype=np.float32).reshape(4, 5, 2),
            "encoder_adj_input": np.eye(5, dtype=np.float32)[None].repeat(4, 0)})
        assert ne["relu_nef"].shape == (4, 5, 64) and sorted(ne)[1] == "relu_nef"
        np.testing.assert_array_equal(ne["encoder_centroid_input"], np.arange(40).reshape(4, 5, 2))
        inf = client.predict("NuclearTrackingInf", 6, {
            "current_embeddings": np.zeros((1, 8, 3, 64), np.float32),
            "current_centroids": np.zeros((1, 8, 3, 2), np.float32),
            "future_embeddings": np.zeros((1, 1, 4, 64), np.float32),
            "future_centroids": np.ones((1, 1, 4, 2), np.float32)})["tracking_decoder"]
        assert inf.shape == (1, 1, 3, 4, 3)
        client.close()
    finally:
        server.stop()
