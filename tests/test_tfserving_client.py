"""TF Serving client against the dev model server over a real socket."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import numpy as np
import pytest

from redis_consumer.errors import JobTimeout, TransientError, UserError
from redis_consumer.settings import Settings
from redis_consumer.tfserving import client as client_mod
from redis_consumer.tfserving.client import CALL_OBSERVERS, TFServingClient, get_client
from tests.helpers.model_server import ModelServer
from tests.helpers.net import free_port


def make_settings(port: int, **kw) -> Settings:
    kw.setdefault("GRPC_BACKOFF", 0.01)
    kw.setdefault("RETRY_BACKOFF_CAP", 0.05)
    return Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=port, **kw)


@pytest.fixture(scope="module")
def server():
    with ModelServer(max_batch_size=8) as srv:
        yield srv


@pytest.fixture(scope="module")
def content_server():
    with ModelServer(response_encoding="content") as srv:
        yield srv


@pytest.fixture(scope="module")
def flaky_server():
    with ModelServer(fail_rate=0.4, seed=3) as srv:
        yield srv


def images(n=5, size=32, dtype="float32"):
    return np.random.default_rng(n).random((n, size, size, 1)).astype(dtype)


def test_identity_round_trip_both_reply_forms(server, content_server):
    x = images(3)
    for srv in (server, content_server):
        c = TFServingClient(make_settings(srv.port))
        y = c.predict("Identity", 1, x)
        assert isinstance(y, np.ndarray) and y.flags.writeable
        np.testing.assert_array_equal(y, x)
        ints = (x * 255).astype(np.uint8)
        np.testing.assert_array_equal(c.predict("Identity", 1, {"image": ints})["output"], ints)
        c.close()


def test_batches_split_to_server_limit_and_limit_is_remembered(server):
    c = TFServingClient(make_settings(server.port, TF_MAX_BATCH_SIZE=32, PIPELINE_DEPTH=3))
    before = server.stats()
    x = images(45)
    np.testing.assert_array_equal(c.predict("Identity", 1, x), x)
    assert c.max_batch == {"Identity": 8}
    after = server.stats()
    rejected = after["rejected_batches"] - before["rejected_batches"]
    assert 1 <= rejected <= 3  # at most the batches already in flight when the limit was learned
    np.testing.assert_array_equal(c.predict("Identity", 1, x[:20]), x[:20])
    assert server.stats()["rejected_batches"] == after["rejected_batches"]


def test_retries_through_injected_failures(flaky_server):
    c = TFServingClient(make_settings(flaky_server.port, MAX_RETRY=20, TF_MAX_BATCH_SIZE=2))
    x = images(20, size=8)
    np.testing.assert_array_equal(c.predict("Identity", 1, x), x)
    stats = flaky_server.stats()
    assert stats["injected_failures"] > 0


def test_retries_are_bounded(flaky_server):
    c = TFServingClient(make_settings(flaky_server.port, MAX_RETRY=0, TF_MAX_BATCH_SIZE=1))
    with pytest.raises(TransientError, match="UNAVAILABLE"):
        for _ in range(30):  # p(no failure in 30 calls at 40%) is negligible
            c.predict("Identity", 1, images(1, size=4))


def test_unreachable_server_is_transient_and_bounded():
    c = TFServingClient(make_settings(free_port(), MAX_RETRY=2, GRPC_TIMEOUT=1.0))
    assert c.ready(0.2) is False
    with pytest.raises(TransientError) as info:
        c.predict("Identity", 1, {"image": images(1)})
    assert not isinstance(info.value, UserError)


def test_unknown_model_and_version_are_user_errors(server):
    c = TFServingClient(make_settings(server.port))
    with pytest.raises(UserError) as info:
        c.predict("NoSuchModel", 1, {"image": images(1)})
    assert "NoSuchModel" in str(info.value) and "version 1" in str(info.value)
    assert "Servable not found" in str(info.value)
    with pytest.raises(UserError, match=r"'Identity' version 9 .*Specific\(Identity, 9\)"):
        c.get_metadata("Identity", 9)


def test_invalid_argument_is_a_user_error(server):
    c = TFServingClient(make_settings(server.port))
    with pytest.raises(UserError, match="NuclearSegmentation.*expects"):
        c.predict("NuclearSegmentation", 1, np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(UserError, match="alias not found"):
        c.predict("Identity", 1, {"wrong": images(1)})


def test_deadline_is_honoured():
    with ModelServer(gpu_base_ms=3000, gpu_tile=0) as slow:
        c = TFServingClient(make_settings(slow.port, GRPC_TIMEOUT=30, MAX_RETRY=5))
        seen = []
        CALL_OBSERVERS.append(lambda m, code, s: seen.append((m, code)))
        try:
            with pytest.raises(JobTimeout):
                c.predict("SimulatedGPU", 1, {"image": images(1)}, deadline=0.5)
        finally:
            CALL_OBSERVERS.clear()
        assert ("Predict", "DEADLINE_EXCEEDED") in seen


def test_call_observers_see_method_code_and_latency(server):
    seen = []
    CALL_OBSERVERS.append(lambda m, code, s: seen.append((m, code, s)))
    try:
        c = TFServingClient(make_settings(server.port))
        c.predict("Identity", 1, {"image": images(2)})
        with pytest.raises(UserError):
            c.get_metadata("Missing", 1)
    finally:
        CALL_OBSERVERS.clear()
    assert ("Predict", "OK") in [(m, code) for m, code, _ in seen]
    assert ("GetModelMetadata", "NOT_FOUND") in [(m, code) for m, code, _ in seen]
    assert all(s >= 0 for *_, s in seen)


def test_metadata_cached_in_process_and_redis(server, rds):
    c = TFServingClient(make_settings(server.port, METADATA_EXPIRE_TIME=30), redis_client=rds)
    meta = c.get_metadata("NuclearSegmentation", 1)
    assert list(meta.inputs) == ["image"] and meta.inputs["image"].shape == (-1, -1, -1, 1)
    assert meta.outputs["probability"].dtype == np.float32 and meta.version == 1
    cached = json.loads(rds.hget("NuclearSegmentation:1", "metadata_rc"))
    assert cached["inputs"]["image"]["dtype"] == "float32"
    assert cached["outputs"]["probability"]["shape"] == [-1, -1, -1, 1]
    # the kiosk's consumers read `metadata` as the signature's inputs in protobuf-JSON form
    kiosk = json.loads(rds.hget("NuclearSegmentation:1", "metadata"))
    assert kiosk == {"image": {"dtype": "DT_FLOAT", "name": "image:0",
                               "tensorShape": {"dim": [{"size": "-1"}] * 3 + [{"size": "1"}]}}}
    assert 0 < rds.ttl("NuclearSegmentation:1") <= 30
    # a second client (another worker) reads Redis and makes no gRPC call
    calls = []
    CALL_OBSERVERS.append(lambda m, code, s: calls.append(m))
    try:
        other = TFServingClient(make_settings(server.port), redis_client=rds)
        assert other.get_metadata("NuclearSegmentation", 1) == meta
        assert c.get_metadata("NuclearSegmentation", 1) is meta
    finally:
        CALL_OBSERVERS.clear()
    assert calls == []


def test_latest_version_and_status(server):
    c = TFServingClient(make_settings(server.port))
    assert c.get_metadata("Identity", None).version == 1
    assert c.model_status("SimulatedGPU") == [{"version": 1, "state": "AVAILABLE", "error_message": ""}]
    assert c.ready(5.0)


def test_get_client_is_one_per_target():
    a = get_client(make_settings(1234))
    b = get_client(make_settings(1234))
    c = get_client(make_settings(1235))
    assert a is b and a is not c
    assert a._channel is None  # created lazily


FORK_SCRIPT = """
import multiprocessing, sys
import numpy as np
from redis_consumer.settings import Settings
from redis_consumer.tfserving.client import get_client

def child(port, q):
    c = get_client(Settings.from_env({}, TF_PORT=port))
    q.put(float(c.predict("Identity", 1, np.ones((1, 4, 4, 1), np.float32)).sum()))

port = int(sys.argv[1])
c = get_client(Settings.from_env({}, TF_PORT=port))
c.predict("Identity", 1, {"image": np.ones((1, 4, 4, 1), np.float32)})
parent_channel = c._channel
ctx = multiprocessing.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(port, q))
p.start()
print("child", q.get(timeout=20))
p.join(20)
assert c._channel is parent_channel
print("parent", float(c.predict("Identity", 1, np.ones((1, 2, 2, 1), np.float32)).sum()))
"""


def test_channel_is_recreated_after_fork(server):
    """A forked child gets its own channel; the parent keeps using its own (clean process)."""
    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT, str(server.port)], capture_output=True,
                         text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "child 16.0" in out.stdout and "parent 4.0" in out.stdout


def test_nuclear_segmentation_separates_blobs(server):
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (1, 200, 300, 1)).astype(np.float32)
    yy, xx = np.mgrid[:200, :300]
    centers = [(50, 60), (120, 200), (160, 80)]
    mask = np.zeros((200, 300), bool)
    for cy, cx in centers:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < 8 ** 2
    img[0, mask, 0] += 200
    c = TFServingClient(make_settings(server.port))
    prob = c.predict("NuclearSegmentation", 1, img)
    assert prob.shape == img.shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    inner = np.zeros_like(mask)
    for cy, cx in centers:
        inner |= (yy - cy) ** 2 + (xx - cx) ** 2 < 5 ** 2
    far = ~np.zeros_like(mask)
    for cy, cx in centers:
        far &= (yy - cy) ** 2 + (xx - cx) ** 2 > 20 ** 2
    assert prob[0, inner, 0].mean() > 0.9
    assert prob[0, far, 0].mean() < 0.1
    # deterministic
    np.testing.assert_array_equal(prob, c.predict("NuclearSegmentation", 1, img))


def test_grpc_status_errors_other_than_retryable_are_transient(monkeypatch, server):
    c = TFServingClient(make_settings(server.port))

    class Boom(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.INTERNAL

        def details(self):
            return "kernel crashed"

    with pytest.raises(TransientError, match="INTERNAL kernel crashed"):
        c.classify(*client_mod.status(Boom()), "m", 1)
    assert client_mod._batch_limit("Task size 40 is larger than maximum input batch size 32") == 32


def test_metadata_written_by_a_kiosk_consumer_is_tolerated(server, rds):
    """A kiosk worker sharing Redis leaves only its own `metadata` field: we ask TF Serving."""
    rds.hset("Identity:1", "metadata", json.dumps({"image": {"dtype": "DT_FLOAT"}}))
    rds.hset("Identity:1", "metadata_rc", "{not json")
    c = TFServingClient(make_settings(server.port), redis_client=rds)
    assert list(c.get_metadata("Identity", 1).outputs) == ["output"]
    assert json.loads(rds.hget("Identity:1", "metadata_rc"))["name"] == "Identity"
