"""Issue 15 item 3: a TF Serving that stops answering fails jobs with a clear reason; workers live.

Two real "hung" model servers: a raw TCP socket that accepts and never speaks HTTP/2, and a real
gRPC server whose handlers never return. A real worker process (real redis-server) must end the
job (failed after its attempts) saying TF Serving did not answer, well before the worker's hard
limit (JOB_TIMEOUT + grace), and keep running: before, `get_metadata()` ran without the job's
deadline, blocked in gRPC's C code past the hard limit, and the worker exited 70.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from concurrent import futures

import grpc
import numpy as np
import pytest
import tifffile

from redis_consumer.tfserving.protos import rcserving_pb2 as pb
from tests.helpers.chaos_procs import WorkerProcess, submit, worker_env
from tests.helpers.net import free_port, wait_final

pytestmark = pytest.mark.timeout(180)


class SilentSocket:
    """Accepts TCP connections and never sends a byte (no HTTP/2 preface, no SETTINGS)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)  # kept open, never read or written

    def stop(self) -> None:
        self._stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


class SleepingGrpc:
    """A real gRPC server: every method is accepted and its handler sleeps until the server stops."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls = 0
        self.models: list[str] = []  # `name:version` of each call, in order
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        owner = self

        class Handler(grpc.GenericRpcHandler):
            def service(self, details):
                def sleep_forever(request, context):
                    owner.calls += 1
                    owner.models.append(_model_of(details.method, request))
                    owner.released.wait(120)
                    context.abort(grpc.StatusCode.UNAVAILABLE, "released")

                return grpc.unary_unary_rpc_method_handler(sleep_forever)

        self.server.add_generic_rpc_handlers((Handler(),))
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def stop(self) -> None:
        self.released.set()
        self.server.stop(0)


def _model_of(method: str, request: bytes) -> str:
    """`name:version` a Predict or GetModelMetadata request asks for (both carry model_spec = 1)."""
    message = pb.PredictRequest if method.endswith("/Predict") else pb.GetModelMetadataRequest
    spec = message.FromString(request).model_spec
    return f"{spec.name}:{spec.version.value}"


@pytest.fixture(params=["silent-socket", "sleeping-grpc-server"])
def hung(request):
    server = SilentSocket() if request.param == "silent-socket" else SleepingGrpc()
    yield server
    server.stop()


def _stack(redis_server, tmp_path, port: int, **env):
    bucket = tmp_path / "bucket"
    (bucket / "uploads").mkdir(parents=True)
    tifffile.imwrite(bucket / "uploads" / "cells.tif", np.ones((32, 32), np.uint16))
    client = redis_server.client()
    client.flushall()
    worker = WorkerProcess(worker_env(
        REDIS_URL=redis_server.url, QUEUE="hung", CONSUMER_TYPE="segmentation", STORAGE_BUCKET=f"file://{bucket}",
        OUTPUT_URL_MODE="key", TF_HOST="127.0.0.1", TF_PORT=str(port), MAX_ATTEMPTS="1", GRPC_BACKOFF="0.1",
        RETRY_BACKOFF_CAP="0.2", LOG_FORMAT="text", **env), log_dir=str(tmp_path), name="hung-worker").start()
    return client, worker


def _job(client) -> str:
    return submit(client, "hung", key=f"hung:cells.tif:{uuid.uuid4().hex}", input_file_name="uploads/cells.tif",
                  original_name="cells.tif", model_name="NuclearSegmentation", model_version="1")


def test_an_unanswering_model_server_fails_the_job_saying_so(redis_server, tmp_path, hung):
    """GRPC_TIMEOUT (1 s) well inside JOB_TIMEOUT: each attempt waits 1 s, then the reason says so."""
    client, worker = _stack(redis_server, tmp_path, hung.port, GRPC_TIMEOUT="1", MAX_RETRY="1", JOB_TIMEOUT="30",
                            SHUTDOWN_GRACE="5")
    try:
        started = time.monotonic()
        job = wait_final(client, _job(client), timeout=60)
        took = time.monotonic() - started
        assert job["status"] == "failed" and job["failure_type"] == "system", job
        said = f"TensorFlow Serving at 127.0.0.1:{hung.port} did not answer within 1 s (model 'NuclearSegmentation')"
        assert said in job["reason"], job["reason"]
        assert took < 30  # ended by the gRPC deadlines, long before JOB_TIMEOUT (not a speed assertion)
        assert worker.alive(), worker.log_path.read_text()[-2000:]
        if isinstance(hung, SleepingGrpc):
            # the job's first call and MAX_RETRY=1 retry, each carrying its deadline (the worker's
            # warm-up before its first claim asks for the default model, NUCLEAR_MODEL, on its own)
            assert hung.models.count("NuclearSegmentation:1") == 2, hung.models
        second = wait_final(client, _job(client), timeout=60)  # the same worker serves the next job
        assert second["status"] == "failed" and "did not answer" in second["reason"]
        assert worker.alive()
    finally:
        worker.terminate(30)


def test_a_hung_model_server_never_makes_the_worker_exit_70(redis_server, tmp_path, hung):
    """GRPC_TIMEOUT (60 s) beyond JOB_TIMEOUT (3 s): the metadata call is cut at the job's deadline,
    so the job ends before the hard limit (JOB_TIMEOUT + 5 s) and the worker keeps running."""
    client, worker = _stack(redis_server, tmp_path, hung.port, GRPC_TIMEOUT="60", MAX_RETRY="5", JOB_TIMEOUT="3",
                            SHUTDOWN_GRACE="1")
    try:
        key = _job(client)
        job = wait_final(client, key, timeout=60)
        assert job["status"] == "failed" and job["failure_type"] == "system", job
        said = f"TensorFlow Serving at 127.0.0.1:{hung.port} did not answer within"
        # cut by the job's deadline and saying why (the worker's own JOB_TIMEOUT may win a close race)
        assert said in job["reason"] or "JOB_TIMEOUT" in job["reason"], job["reason"]
        time.sleep(6)  # past where the hard limit of that job would have been
        log = worker.log_path.read_text()
        assert worker.alive(), log[-2000:]
        assert "stuck past JOB_TIMEOUT" not in log and worker.proc.returncode is None
    finally:
        worker.terminate(30)
