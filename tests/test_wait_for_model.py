"""Issue 16 item 1: workers wait for the model, not the job.

A real worker process (real redis-server, the dev model server over a real socket) whose TF
Serving goes away for longer than JOB_TIMEOUT must not burn attempts: the job that found the
server unreachable goes back to the queue head uncounted, the worker stops claiming (/readyz 503
with the reason, `redis_consumer_waiting_for_model` 1), and every job finishes once the server is
back on the same port. MAX_ATTEMPTS=1 makes any counted attempt visible: a single counted system
error would dead-letter the job. A wrong model name and a server that answers with errors still
fail jobs with their reasons, attempts counted.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent import futures

import grpc
import numpy as np
import pytest

from redis_consumer.queue.keys import job_log
from redis_consumer.tfserving.catalog import builtin_models
from redis_consumer.tfserving.server import DevModelServer
from tests.helpers.chaos_procs import WorkerProcess, submit, worker_env
from tests.helpers.model_server import ModelServer
from tests.helpers.net import free_port, wait_final, wait_until

pytestmark = pytest.mark.timeout(180)

CONSUMER = "tests.consumers_for_tests:IdentityModelConsumer"
QUEUE = "waitq"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _metric(port: int, name: str) -> float | None:
    _, text = _get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(f'{name}{{queue="{QUEUE}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return None


def _worker(redis_server, tmp_path, tf_port: int, metrics_port: int = 0, **env) -> WorkerProcess:
    settings = {"REDIS_URL": redis_server.url, "QUEUE": QUEUE, "CONSUMER_TYPE": CONSUMER, "TF_HOST": "127.0.0.1",
                "TF_PORT": str(tf_port), "METRICS_PORT": str(metrics_port), "JOB_TIMEOUT": "5", "MAX_ATTEMPTS": "1",
                "GRPC_BACKOFF": "0.2", "RETRY_BACKOFF_CAP": "1", "LOG_FORMAT": "text"}
    settings.update(env)
    return WorkerProcess(worker_env(**settings), log_dir=str(tmp_path), name=f"wait-{uuid.uuid4().hex[:4]}").start()


def _job(client, **fields) -> str:
    return submit(client, QUEUE, key=f"{QUEUE}:x.tif:{uuid.uuid4().hex}", **fields)


def test_a_model_server_down_longer_than_job_timeout_costs_no_attempt(redis_server, tmp_path):
    client = redis_server.client()
    client.flushall()
    server = ModelServer().start()
    tf_port, metrics_port = server.port, free_port()
    # MAX_RETRY high: the first job keeps retrying UNAVAILABLE until its 5 s deadline (the hard case)
    worker = _worker(redis_server, tmp_path, tf_port, metrics_port, MAX_RETRY="100")
    try:
        first = wait_final(client, _job(client), timeout=60)
        assert first["status"] == "done" and first["output_url"] == "identity:128", first
        wait_until(lambda: _get(metrics_port, "/readyz")[0] == 200, timeout=20, message="ready")
        assert _metric(metrics_port, "redis_consumer_waiting_for_model") == 0

        server.stop()
        down_at = time.monotonic()
        keys = [_job(client) for _ in range(5)]
        _, body = wait_until(lambda: (r := _get(metrics_port, "/readyz"))[0] == 503 and "waiting" in r[1] and r,
                                timeout=30, message="/readyz reporting the wait")
        assert "waiting for TensorFlow Serving, not claiming" in body and f"127.0.0.1:{tf_port}" in body, body
        assert "unreachable" in body, body
        assert _metric(metrics_port, "redis_consumer_waiting_for_model") == 1
        time.sleep(max(0.0, 12.0 - (time.monotonic() - down_at)))  # down for 12 s > JOB_TIMEOUT = 5 s
        # while down: nothing failed, nothing dead-lettered, the worker alive and heartbeating
        assert worker.alive(), worker.output()[-3000:]
        assert client.llen(f"dead-{QUEUE}") == 0
        assert all(client.hget(k, "status") == "new" for k in keys), [client.hgetall(k) for k in keys]
        seconds, micros = client.time()
        now = seconds + micros / 1e6
        live = client.zrangebyscore(f"consumers:{QUEUE}", now, "+inf")  # heartbeat not expired
        assert [c for c in live if c.startswith(worker.name)], live
        # the released job went back to the head: it is still the next one to run
        assert client.lrange(QUEUE, -1, -1) == [keys[0]]
        assert "waiting for the model server" in client.hget(keys[0], "last_error")
        assert int(client.hget(keys[0], "attempts")) == 0  # the claim's count undone

        server = ModelServer(port=tf_port).start()  # back on the same port
        jobs = [wait_final(client, k, timeout=60) for k in keys]
        assert [j["status"] for j in jobs] == ["done"] * 5, jobs
        assert [j["attempts"] for j in jobs] == ["1"] * 5  # the released claim did not count
        assert client.llen(f"dead-{QUEUE}") == 0
        wait_until(lambda: _get(metrics_port, "/readyz")[0] == 200, timeout=20, message="ready again")
        assert _metric(metrics_port, "redis_consumer_waiting_for_model") == 0
        assert _metric(metrics_port, "redis_consumer_model_wait_seconds_total") > 0
        released = [line for line in _get(metrics_port, "/metrics")[1].splitlines()
                    if line.startswith("redis_consumer_jobs_requeued_total") and 'outcome="released"' in line]
        assert released and float(released[0].rsplit(" ", 1)[1]) >= 1, released
        story = "\n".join(client.lrange(job_log(keys[0]), 0, -1))
        assert "unreachable" in story and "attempt not counted" in story, story
        assert worker.alive()
        assert "not claiming until TensorFlow Serving answers" in worker.output()
        assert "answers again" in worker.output()
    finally:
        worker.terminate(30)
        server.stop()


def test_a_wrong_model_name_still_fails_at_once_as_a_user_error(redis_server, tmp_path):
    client = redis_server.client()
    client.flushall()
    with ModelServer() as server:
        metrics_port = free_port()
        worker = _worker(redis_server, tmp_path, server.port, metrics_port)
        try:
            job = wait_final(client, _job(client, model_name="NoSuchModel"), timeout=60)
            assert job["status"] == "failed" and job["failure_type"] == "user", job
            assert "'NoSuchModel'" in job["reason"] and "not served" in job["reason"], job["reason"]
            assert job["attempts"] == "1"
            assert _metric(metrics_port, "redis_consumer_waiting_for_model") == 0
            assert _metric(metrics_port, "redis_consumer_model_wait_seconds_total") == 0
            assert "not claiming" not in worker.output()
        finally:
            worker.terminate(30)


class FailingGrpc:
    """A real gRPC server that answers every call with one error code (a crashing TF Serving)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.port = free_port()
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        owner = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, handler_call_details):
                def fail(request, context):
                    owner.calls += 1
                    context.abort(code, details)

                return grpc.unary_unary_rpc_method_handler(fail)

        self.server.add_generic_rpc_handlers((Handler(),))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(0)


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE])
def test_a_server_that_answers_with_errors_still_counts_attempts(redis_server, tmp_path, code):
    """INTERNAL (a crashing model) and UNAVAILABLE sent by a connected server (overloaded) are the
    server's answers, not an unreachable server: attempts count and the job ends dead-lettered."""
    client = redis_server.client()
    client.flushall()
    failing = FailingGrpc(code, "model crashed: boom")
    metrics_port = free_port()
    worker = _worker(redis_server, tmp_path, failing.port, metrics_port, MAX_ATTEMPTS="2", MAX_RETRY="1",
                     GRPC_BACKOFF="0.05")
    try:
        key = _job(client)
        job = wait_final(client, key, timeout=60)
        assert job["status"] == "failed" and job["failure_type"] == "system", job
        assert job["attempts"] == "2"
        assert code.name in job["reason"] and "after 2 attempts" in job["reason"], job["reason"]
        assert client.lrange(f"dead-{QUEUE}", 0, -1) == [key]
        # 2 attempts x (1 call + MAX_RETRY=1 retry of UNAVAILABLE; INTERNAL is not retried)
        assert failing.calls == (4 if code == grpc.StatusCode.UNAVAILABLE else 2)
        assert _metric(metrics_port, "redis_consumer_model_wait_seconds_total") == 0
        assert "not claiming" not in worker.output()
    finally:
        worker.terminate(30)
        failing.stop()


def test_a_server_that_dies_during_the_call_counts_the_attempt(redis_server, tmp_path):
    """The job may have crashed the server (a poison input): a server that was READY when the
    call began and went away during it is not "unreachable", so the attempt counts and such a job
    ends dead-lettered instead of crashing TF Serving forever from the queue head."""
    client = redis_server.client()
    client.flushall()
    server = ModelServer(gpu_base_ms=4000, gpu_tile=0).start()  # SimulatedGPU holds each call 4 s
    worker = _worker(redis_server, tmp_path, server.port, 0, MAX_ATTEMPTS="1", JOB_TIMEOUT="30", MAX_RETRY="3",
                     GRPC_BACKOFF="0.1")
    try:
        key = _job(client, model_name="SimulatedGPU")
        wait_until(lambda: client.hget(key, "status") == "started", timeout=30, message="the job to start")
        time.sleep(1.5)  # the Predict call is in flight on the server
        server.proc.kill()
        server.proc.wait(10)
        job = wait_final(client, key, timeout=60)
        assert job["status"] == "failed" and job["failure_type"] == "system", job
        assert job["attempts"] == "1" and "UNAVAILABLE" in job["reason"], job
        assert client.lrange(f"dead-{QUEUE}", 0, -1) == [key]
        assert "not claiming" not in worker.output()
        assert worker.alive()
    finally:
        worker.terminate(30)
        server.stop()


class RollingOut(DevModelServer):
    """The dev model server (in this process, real gRPC) while a rollout loads Identity: metadata and
    Predict answer NOT_FOUND and GetModelStatus says LOADING, as TF Serving does for a servable
    that is still coming up; `loaded()` ends the rollout."""

    def __init__(self) -> None:
        super().__init__(builtin_models(), port=0)
        self.rolling = threading.Event()
        self.rolling.set()

    def loaded(self) -> None:
        self.rolling.clear()

    def lookup(self, name, version, context):
        if name == "Identity" and self.rolling.is_set():
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
        return super().lookup(name, version, context)

    def get_model_status(self, request, context):
        from redis_consumer.tfserving.protos import rcserving_pb2 as pb

        req = pb.GetModelStatusRequest.FromString(request)
        if req.model_spec.name == "Identity" and self.rolling.is_set():
            resp = pb.GetModelStatusResponse()
            resp.model_version_status.add(version=1, state=pb.ModelVersionStatus.LOADING)
            return resp.SerializeToString()
        return super().get_model_status(request, context)


def test_a_model_still_loading_is_waited_for_and_a_wrong_name_is_not(redis_server, tmp_path):
    """NOT_FOUND while GetModelStatus says LOADING (a rollout) waits, uncounted; NOT_FOUND for a name
    the server has never heard of fails at once as a user error, even meanwhile."""
    client = redis_server.client()
    client.flushall()
    server = RollingOut()
    port = server.start()
    metrics_port = free_port()
    worker = _worker(redis_server, tmp_path, port, metrics_port, MAX_ATTEMPTS="1")
    try:
        key = _job(client)
        _, body = wait_until(lambda: (r := _get(metrics_port, "/readyz"))[0] == 503 and "loading" in r[1] and r,
                                timeout=30, message="/readyz reporting the rollout")
        assert "still loading model 'Identity' version 1" in body, body
        assert _metric(metrics_port, "redis_consumer_waiting_for_model") == 1
        assert client.hget(key, "status") == "new" and client.hget(key, "attempts") == "0", client.hgetall(key)
        server.loaded()
        job = wait_final(client, key, timeout=60)
        assert job["status"] == "done" and job["attempts"] == "1", job
        wrong = wait_final(client, _job(client, model_name="NoSuchModel"), timeout=60)
        assert wrong["status"] == "failed" and wrong["failure_type"] == "user", wrong
        assert "'NoSuchModel'" in wrong["reason"] and "not served" in wrong["reason"], wrong["reason"]
        assert client.llen(f"dead-{QUEUE}") == 0
    finally:
        worker.terminate(30)
        server.stop()


def test_the_client_tells_an_unreachable_server_from_one_answering_unavailable():
    """The kind of failure comes from the TF client: ServingUnavailable only when the channel is
    down; an UNAVAILABLE answer from a connected server stays a plain TransientError."""
    from redis_consumer.errors import ServingUnavailable, TransientError
    from redis_consumer.settings import Settings
    from redis_consumer.tfserving.client import DOWN, UP, TFServingClient

    def make(port, **kw):
        return TFServingClient(Settings.from_env({}, TF_HOST="127.0.0.1", TF_PORT=port, GRPC_BACKOFF=0.01,
                                                 RETRY_BACKOFF_CAP=0.05, MAX_RETRY=2, **kw))

    nobody = make(free_port())
    with pytest.raises(ServingUnavailable, match="unreachable") as info:
        nobody.predict("Identity", 1, {"image": np.zeros((1, 4, 4, 1), np.float32)}, deadline=30)
    assert info.value.model == "Identity" and info.value.version == 1
    assert nobody.probe("Identity", 1, timeout=0.3)[0] == DOWN
    with ModelServer(fail_rate=1.0) as flaky:
        busy = make(flaky.port)
        with pytest.raises(TransientError, match="UNAVAILABLE") as info:
            busy.predict("Identity", 1, {"image": np.zeros((1, 4, 4, 1), np.float32)}, deadline=30)
        assert not isinstance(info.value, ServingUnavailable)
        assert busy.probe("Identity", 1) == (UP, "")
        assert busy.probe("NoSuchModel", 1) == (UP, "")  # the server answers: its jobs fail as user errors
    nobody.close()
    busy.close()
