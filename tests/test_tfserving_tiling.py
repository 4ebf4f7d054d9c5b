"""Tiling: cut, predict through the dev server, stitch."""

from __future__ import annotations

import numpy as np
import pytest

from redis_consumer.errors import UserError
from redis_consumer.settings import Settings
from redis_consumer.tfserving.client import TFServingClient
from redis_consumer.tfserving.models import foreground_probability
from redis_consumer.tfserving.tiling import predict_tiled, seams, tile_starts
from tests.helpers.model_server import ModelServer


@pytest.fixture(scope="module")
def client():
    with ModelServer(max_batch_size=16, gpu_base_ms=0, gpu_per_sample_ms=0, gpu_tile=64) as srv:
        settings = Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=srv.port, GRPC_BACKOFF=0.01)
        c = TFServingClient(settings)
        yield c
        c.close()


@pytest.mark.parametrize("size", [64, 128, 100, 257, 30, 1])
def test_tile_cover_is_exact(size):
    for tile, overlap in ((64, 16), (64, 0), (64, 63), (7, 3)):
        if size < tile:
            continue
        starts = tile_starts(size, tile, overlap)
        spans = seams(starts, tile, size)
        assert starts[0] == 0 and starts[-1] == size - tile
        covered = np.zeros(size, int)
        for s, (lo, hi) in zip(starts, spans):
            assert s <= lo < hi <= s + tile
            covered[lo:hi] += 1
        assert (covered == 1).all()


@pytest.mark.parametrize("shape", [(2, 128, 192, 1), (1, 100, 157, 2), (3, 64, 64, 1), (1, 30, 45, 1),
                                   (1, 65, 64, 3)])
def test_identity_stitch_equals_input(client, shape):
    images = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    out = predict_tiled(client, "Identity", 1, images, tile_shape=(64, 64), overlap=16)
    assert out.shape == images.shape
    np.testing.assert_array_equal(out, images)


def test_tile_shape_comes_from_model_metadata(client):
    images = np.random.default_rng(1).random((2, 150, 130, 1)).astype(np.float32)
    out = predict_tiled(client, "SimulatedGPU", 1, images)  # model takes (-1, 64, 64, 1) tiles
    np.testing.assert_array_equal(out, images)
    with pytest.raises(UserError, match="overlap"):
        predict_tiled(client, "Identity", 1, images, tile_shape=(32, 32), overlap=32)
    with pytest.raises(UserError, match=r"\(N, H, W, C\)"):
        predict_tiled(client, "Identity", 1, images[0], tile_shape=(32, 32))


def test_segmentation_tiled_agrees_with_whole_image_inside(client):
    rng = np.random.default_rng(5)
    img = rng.normal(50, 3, (1, 160, 160, 1)).astype(np.float32)
    yy, xx = np.mgrid[:160, :160]
    for cy, cx in ((40, 40), (100, 120), (130, 30)):
        img[0, (yy - cy) ** 2 + (xx - cx) ** 2 < 36, 0] += 100
    whole = predict_tiled(client, "NuclearSegmentation", 1, img)  # any-size model: one tile
    np.testing.assert_array_equal(whole[0, ..., 0], foreground_probability(img[0, ..., 0]))
    tiled = predict_tiled(client, "NuclearSegmentation", 1, img, tile_shape=(96, 96), overlap=48)
    assert tiled.shape == img.shape
    assert np.mean((tiled > 0.5) == (whole > 0.5)) > 0.99


def test_inputs_are_cast_to_the_model_dtype(client):
    images = np.random.default_rng(2).random((1, 70, 90, 1))  # float64; the model takes float32
    out = predict_tiled(client, "SimulatedGPU", 1, images)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, images.astype(np.float32))
    whole = client.predict("NuclearSegmentation", 1, images * 100)
    assert whole.dtype == np.float32 and whole.shape == images.shape


def test_outputs_that_are_not_batch_aligned_are_concatenated():
    from redis_consumer.tfserving.batching import _Outputs

    out = _Outputs(5)
    out.add(0, 2, {"y": np.ones((2, 3)), "n": np.array(7)})
    out.add(2, 4, {"y": np.zeros((2, 3)), "n": np.array(8)})
    out.add(4, 5, {"y": np.ones((1, 3)), "n": np.array(9)})
    result = out.result()
    np.testing.assert_array_equal(result["y"], [[1] * 3] * 2 + [[0] * 3] * 2 + [[1] * 3])
    np.testing.assert_array_equal(result["n"], [7, 8, 9])
    ragged = _Outputs(4)
    ragged.add(0, 2, {"y": np.ones((2, 3))})
    ragged.add(2, 4, {"y": np.ones((2, 4))})
    with pytest.raises(UserError, match="changes shape between batches"):
        ragged.result()
