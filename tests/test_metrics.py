"""Worker metrics: a real worker process counts its jobs by status on /metrics; probes answer."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request

from redis_consumer.metrics.worker import (
    HealthChecks,
    WorkerMetrics,
    tfserving_ready,
    uses_tfserving,
)
from redis_consumer.settings import Settings
from tests.helpers.net import free_port, wait_for_port, wait_until
from tests.helpers.redis_server import RedisServer, env_for
from tests.helpers.workers import start_worker, stop_all


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _canonical(sample: str) -> str:
    """`name{b="2",a="1"}` -> `name{a="1",b="2"}` (label order is not part of the format)."""
    if "{" not in sample:
        return sample
    name, labels = sample[:-1].split("{", 1)
    return name + "{" + ",".join(sorted(labels.split(","))) + "}"


class _Samples(dict):
    def __getitem__(self, key: str) -> float:
        return super().__getitem__(_canonical(key))


def _samples(text: str) -> dict[str, float]:
    out = _Samples()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[_canonical(name)] = float(value)
    return out


def _push(rds, queue: str, n: int, prefix: str, **fields: str) -> list[str]:
    keys_ = []
    for i in range(n):
        key = f"{queue}:{prefix}{i}.tif:{i:032x}"
        rds.hset(key, mapping={"status": "new", "created_at": "2026-01-01T00:00:00+00:00", **fields})
        rds.lpush(queue, key)
        keys_.append(key)
    return keys_


def test_worker_metrics_count_jobs_by_status(tmp_path):
    server = RedisServer(appendonly=False).start()
    port = free_port()
    queue = "metrics-q"
    env = env_for(server, QUEUE=queue, CONSUMER_TYPE="tests.consumers_for_tests:RecordingConsumer",
                  METRICS_PORT=str(port), HEARTBEAT_INTERVAL="0.2", HEARTBEAT_TTL="3",
                  EMPTY_QUEUE_TIMEOUT="0.5", MAX_ATTEMPTS="1", RETRY_BACKOFF_CAP="0.05")
    rds = server.client()
    done = _push(rds, queue, 7, "ok")
    failed = _push(rds, queue, 3, "bad", user_error="The image is empty.")
    dead = _push(rds, queue, 2, "flaky", transient="storage said 503")
    proc = start_worker(env, str(tmp_path / "worker.log"))
    try:
        wait_for_port(port)
        finals = done + failed + dead
        wait_until(lambda: all(rds.hget(k, "status") in ("done", "failed") for k in finals), timeout=60,
                   message="all jobs final")
        status, text = _get(port, "/metrics")
        assert status == 200
        s = _samples(text)
        q = f'queue="{queue}"'
        assert s[f'redis_consumer_jobs_total{{{q},status="done"}}'] == 7
        assert s[f'redis_consumer_jobs_total{{{q},status="failed"}}'] == 5
        assert s[f'redis_consumer_job_failures_total{{{q},failure_type="user"}}'] == 3
        assert s[f'redis_consumer_job_failures_total{{{q},failure_type="system"}}'] == 2
        assert s[f'redis_consumer_jobs_claimed_total{{{q}}}'] == 12
        assert s[f'redis_consumer_jobs_requeued_total{{{q},outcome="dead"}}'] == 2
        assert s[f'redis_consumer_stage_duration_seconds_count{{{q},stage="total"}}'] == 12
        assert s[f'redis_consumer_queue_wait_seconds_count{{{q}}}'] == 12
        assert s[f'redis_consumer_jobs_in_progress{{{q}}}'] == 0
        assert s[f'redis_consumer_heartbeats_total{{{q},result="ok"}}'] >= 1
        assert any(name.startswith("process_resident_memory_bytes") for name in s)
        # bounded labels only: no job key ever appears in the exposition
        assert not any(k in text for k in finals)

        assert _get(port, "/healthz")[0] == 200
        assert _get(port, "/readyz") == (200, "ok\n")
        assert _get(port, "/nope")[0] == 404

        server.kill()  # Redis gone: not ready at once, but still alive (no restarts on a Redis blip)
        code, body = _get(port, "/readyz")
        assert code == 503 and "redis unreachable" in body
        wait_until(lambda: "heartbeats are failing" in _get(port, "/healthz")[1], timeout=30,
                   message="liveness to notice the failing heartbeats")
        assert _get(port, "/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_all([proc])
        server.cleanup()


class _FakeWorker:
    def __init__(self, settings, consumer, redis_client):
        import threading

        self.settings = settings
        self.consumer = consumer
        self.redis = redis_client
        self.stopping = threading.Event()
        self.last_heartbeat_ok = 0.0
        self.current = None
        self.queue = settings.QUEUE


class _TFConsumer:
    uses_tfserving = True
    name = "tf"


def test_readyz_checks_tfserving_only_for_consumers_that_use_it():
    import fakeredis

    settings = Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=free_port())
    plain = HealthChecks(_FakeWorker(settings, object(), fakeredis.FakeRedis()), tf_timeout=0.3)
    assert plain.ready() == (True, "ok\n")
    tf = HealthChecks(_FakeWorker(settings, _TFConsumer(), fakeredis.FakeRedis()), tf_timeout=0.3)
    ok, text = tf.ready()
    assert not ok and "tensorflow serving unreachable" in text
    tf.worker.stopping.set()
    assert tf.ready() == (False, "shutting down\n")


def test_tfserving_ready_true_when_a_grpc_server_listens():
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        settings = Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=port)
        assert tfserving_ready(settings, timeout=5.0)[0] is True
    finally:
        server.stop(None)


def test_uses_tfserving_detects_the_tfserving_base_class():
    from redis_consumer.consumers.noop import NoopConsumer
    from redis_consumer.consumers.segmentation import SegmentationConsumer
    from redis_consumer.consumers.tfserving_consumer import TensorFlowServingConsumer

    class PlainSubclass(TensorFlowServingConsumer):
        uses_tfserving = False  # the base class alone still says so

    settings = Settings.from_env({})
    assert uses_tfserving(SegmentationConsumer(settings)) and uses_tfserving(PlainSubclass(settings))
    assert not uses_tfserving(NoopConsumer(settings)) and not uses_tfserving(object())


def test_grpc_observer_and_bounded_labels():
    m = WorkerMetrics(process_metrics=False)
    m.bind("segmentation", "segmentation")
    m.observe_grpc("/tensorflow.serving.PredictionService/Predict", "OK", 0.02)
    m.observe_grpc("/tensorflow.serving.PredictionService/Predict", "UNAVAILABLE", 0.5)
    m.job_finished("segmentation", "segmentation:a:1", "weird-status", None, {"total": 1.0})
    s = _samples(m.render().decode())
    assert s['redis_consumer_grpc_calls_total{queue="segmentation",method="Predict",code="OK"}'] == 1
    assert s['redis_consumer_grpc_call_duration_seconds_count{queue="segmentation",method="Predict"}'] == 2
    assert s['redis_consumer_jobs_total{queue="segmentation",status="other"}'] == 1
    assert "segmentation:a:1" not in m.render().decode()


def test_grpc_observer_registers_with_the_tfserving_client_when_present():
    from redis_consumer.tfserving import client
    m = WorkerMetrics(process_metrics=False)
    assert m.register_grpc_observer()
    assert m.observe_grpc in client.CALL_OBSERVERS
    m.unregister_grpc_observer()
    assert m.observe_grpc not in client.CALL_OBSERVERS


def test_liveness_fails_only_when_the_supervisor_stops_heartbeating():
    import time as _time

    import fakeredis

    settings = Settings.from_env({}, HEARTBEAT_INTERVAL=1.0, HEARTBEAT_TTL=5.0)
    worker = _FakeWorker(settings, _TFConsumer(), fakeredis.FakeRedis())
    checks = HealthChecks(worker)
    now = _time.monotonic()
    worker.last_heartbeat_attempt, worker.last_heartbeat_ok = now, now
    alive, text = checks.live()
    assert alive and text.startswith("ok")
    worker.last_heartbeat_ok = now - 60  # Redis down for a minute: heartbeats fail but are attempted
    alive, text = checks.live()
    assert alive and "failing" in text
    worker.last_heartbeat_attempt = now - 6  # the supervisor itself is stuck
    alive, text = checks.live()
    assert not alive and "stalled" in text
