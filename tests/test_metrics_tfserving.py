"""Worker metrics with the real TF Serving client and the dev model server over gRPC."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from redis_consumer.metrics.worker import HealthChecks, WorkerMetrics
from redis_consumer.settings import Settings
from redis_consumer.tfserving import client as client_mod
from tests.helpers.model_server import ModelServer


class _Worker:
    def __init__(self, settings):
        self.settings = settings
        self.consumer = type("C", (), {"uses_tfserving": True, "name": "segmentation"})()
        self.redis = fakeredis.FakeRedis()
        self.stopping = threading.Event()
        self.last_heartbeat_ok = 0.0
        self.current = None
        self.queue = settings.QUEUE


@pytest.fixture(scope="module")
def model_server():
    server = ModelServer().start()
    yield server
    server.stop()


def test_grpc_calls_are_counted_by_method_and_code(model_server):
    settings = Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=model_server.port, MAX_RETRY=0)
    metrics = WorkerMetrics(process_metrics=False)
    metrics.bind("segmentation", "segmentation")
    assert metrics.register_grpc_observer()
    try:
        tf = client_mod.get_client(settings)
        tf.get_metadata("Identity", 1)
        with pytest.raises(Exception):  # noqa: B017 - an unknown model is a user error, any type
            tf.get_metadata("NoSuchModel", 1)
    finally:
        metrics.unregister_grpc_observer()
    text = metrics.render().decode()
    lines = [line for line in text.splitlines() if line.startswith("redis_consumer_grpc_calls_total{")]
    ok = [line for line in lines if 'method="GetModelMetadata"' in line and 'code="OK"' in line]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) >= 1
    assert any('code="NOT_FOUND"' in line or 'code="INVALID_ARGUMENT"' in line for line in lines), lines
    assert metrics.observe_grpc not in client_mod.CALL_OBSERVERS


def test_readyz_follows_the_model_server(model_server):
    settings = Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=model_server.port)
    checks = HealthChecks(_Worker(settings), tf_timeout=5.0)
    assert checks.ready() == (True, "ok\n")


def test_readyz_fails_when_the_model_server_goes_away():
    server = ModelServer().start()
    settings = Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=server.port)
    checks = HealthChecks(_Worker(settings), tf_timeout=2.0)
    try:
        assert checks.ready()[0] is True
    finally:
        server.stop()
    ok, text = checks.ready()
    assert not ok and f"127.0.0.1:{server.port}" in text
