"""Reused request/reply buffers (wire.BytesPool) and SimulatedGPU's per-pixel cost and declared dtype."""

from __future__ import annotations

import numpy as np
import pytest

from redis_consumer.settings import Settings
from redis_consumer.tfserving import messages, wire
from redis_consumer.tfserving.client import TFServingClient
from redis_consumer.tfserving.models import SimulatedGPU
from redis_consumer.tfserving.protos import rcserving_pb2 as pb
from redis_consumer.tfserving.server import DevModelServer
from redis_consumer.tfserving.tiling import predict_tiled


def test_pool_reuses_a_buffer_only_when_nobody_holds_it():
    pool = wire.BytesPool(min_size=1000)
    a, view = pool.take(4000)
    view[:] = 1
    b, _ = pool.take(4000)
    assert b is not a  # `a` (and its view) are still held
    del view
    c, _ = pool.take(4000)
    assert c is not a  # the name `a` still holds it
    first_id = id(a)
    del a, b, c
    d, view_d = pool.take(4000)
    assert id(d) == first_id and pool.hits == 1  # the first buffer, warm, handed out again
    held = memoryview(d)
    del view_d
    e, _ = pool.take(4000)
    assert e is not d  # a memoryview (or numpy view) counts as a holder
    assert held.obj is d


def test_small_buffers_bypass_the_pool():
    pool = wire.BytesPool(min_size=1 << 20)
    data, _view = pool.take(100)
    assert len(data) == 100 and pool.hits == pool.misses == 0


def test_a_held_request_is_never_overwritten_by_the_next_one():
    x = np.arange(2 * 512 * 512, dtype=np.float32).reshape(2, 512, 512, 1)  # 2 MB: pooled
    first = messages.frame_predict_request("M", 1, {"image": x})
    copy = bytes(first)
    second = messages.frame_predict_request("M", 1, {"image": x + 1})
    assert first is not second and first == copy
    np.testing.assert_array_equal(np.frombuffer(pb.PredictRequest.FromString(second).inputs["image"].tensor_content,
                                                np.float32).reshape(x.shape), x + 1)
    del first, copy
    third = messages.frame_predict_request("M", 1, {"image": x + 2})  # may reuse the first's buffer
    assert pb.PredictRequest.FromString(third).inputs["image"].tensor_content == (x + 2).tobytes()
    assert second != third


def test_request_writer_buffers_are_reused_after_release():
    shape = (4, 256, 256, 1)
    ids = set()
    for k in range(4):
        writer = messages.RequestWriter("M", 1, {"image": (np.float32, shape)})
        writer.arrays["image"][...] = k
        data = writer.finish()
        assert writer.data == b""  # the writer lets go, so only the caller holds the request
        assert np.all(np.frombuffer(pb.PredictRequest.FromString(data).inputs["image"].tensor_content,
                                    np.float32) == k)
        ids.add(id(data))
        del data
    assert len(ids) < 4


def test_simulated_gpu_charges_per_pixel_and_per_batch():
    gpu = SimulatedGPU(base_seconds=0.004, tile=256)
    t256 = gpu.service_seconds(32, 32 * 256 * 256)
    t512 = gpu.service_seconds(32, 32 * 512 * 512)
    assert t256 == pytest.approx(0.004 + 32 * 0.0005)  # 0.5 ms per 256x256 tile, as before
    assert (t512 - 0.004) == pytest.approx(4 * (t256 - 0.004))  # 4x the pixels, 4x the GPU time
    assert gpu.service_seconds(32) == pytest.approx(t256)  # callers that pass no size: full tiles


def test_simulated_gpu_runs_batches_one_after_another_and_charges_their_service_time():
    import threading
    import time

    gpu = SimulatedGPU(base_seconds=0.05, per_megapixel_seconds=0.0, tile=0)
    ends, held = [], []
    go = threading.Barrier(4)  # three batches and this thread

    def batch():
        go.wait()
        held.append(gpu.occupy(1))
        ends.append(time.perf_counter())

    threads = [threading.Thread(target=batch) for _ in range(3)]
    for t in threads:
        t.start()
    go.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    assert held == [pytest.approx(0.05)] * 3  # busy time is the service, not the time spent queued
    # one at a time: the k-th batch to return cannot be back before k services have run (lower
    # bounds only: a thread woken late under load only makes its end later)
    ends.sort()
    assert all(end - start >= 0.05 * (k + 1) - 1e-3 for k, end in enumerate(ends))
    assert gpu._free_at - start >= 0.15 - 1e-3 and ends[2] >= gpu._free_at  # booked back to back on one timeline


class _Recording(SimulatedGPU):
    def run(self, inputs):
        self.seen = inputs["image"].dtype
        return super().run(inputs)


@pytest.mark.parametrize("dtype", ["float16", "uint16", "uint8"])
def test_tiler_sends_the_dtype_the_model_declares(dtype):
    gpu = _Recording(base_seconds=0, per_megapixel_seconds=0, tile=32, dtype=dtype)
    server = DevModelServer([gpu], port=0, response_encoding="content")
    port = server.start()
    try:
        client = TFServingClient(Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=port))
        images = (np.random.default_rng(0).random((1, 70, 50, 1)) * 200).astype(np.float32).round()
        out = predict_tiled(client, "SimulatedGPU", 1, images)
        client.close()
    finally:
        server.stop()
    assert gpu.seen == np.dtype(dtype)
    assert out.dtype == np.float32  # the output dtype the model declares
    np.testing.assert_array_equal(out, images.astype(dtype).astype(np.float32))


def test_a_held_slice_of_a_writer_array_keeps_its_buffer_out_of_reuse():
    spec = {"image": (np.float32, (1, 512, 1024, 1))}  # 2 MB: pooled
    first = messages.RequestWriter("M", 1, spec)
    tiles = first.arrays["image"][0, :10]  # e.g. a tiler still holding a slice
    tiles[...] = 5
    data = first.finish()
    del data, first
    second = messages.RequestWriter("M", 1, spec)
    second.arrays["image"][...] = 9
    assert not np.shares_memory(tiles, second.arrays["image"])
    assert np.all(tiles == 5)


def test_a_reused_buffer_hashes_by_its_new_contents():
    pool = wire.BytesPool(min_size=1000)
    data, view = pool.take(5000)
    view[:] = 1
    old_hash = hash(data)
    del data, view
    again, view = pool.take(5000)
    view[:] = 2
    assert pool.hits == 1
    assert hash(again) == hash(b"\x02" * 5000) != old_hash


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "uint16", "int64", "bool", "complex64"])
@pytest.mark.parametrize("version", [None, 0, 7, "canary"])
def test_one_input_fast_path_is_the_request_protobuf_reads(dtype, version):
    rng = np.random.default_rng(1)
    arr = (rng.random((2, 5, 3)) * 100).astype(dtype)
    data = messages.frame_predict_request("Seg", version, {"image": arr}, signature="serving_default")
    general = messages.frame_predict_request("Seg", version, {"image": arr}, signature="serving_default",
                                             output_filter=["x"])  # the general path (then one more field)
    assert general.startswith(data) and len(general) > len(data)
    req = pb.PredictRequest.FromString(data)
    assert req.model_spec.name == "Seg" and req.model_spec.signature_name == "serving_default"
    if isinstance(version, int) and version:
        assert req.model_spec.version.value == version
    if isinstance(version, str):
        assert req.model_spec.version_label == version
    t = req.inputs["image"]
    assert [d.size for d in t.tensor_shape.dim] == list(arr.shape)
    assert t.tensor_content == arr.tobytes()
    np.testing.assert_array_equal(messages.parse_predict_request(data).inputs["image"], arr)
