"""The pieces of the chaos soak: the consumer it runs, a TCP proxy that can refuse connections, and
the cluster it disrupts (Redis primary + replica + Sentinel, S3 behind the proxy, model server,
workers). `bench/chaos.py` drives them; workers import `ChaosConsumer` from here.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis_consumer.consumers.base import Consumer
from tests.consumers_for_tests import OwnRedisClient

BUCKET = "chaos-bucket"
QUEUE = "chaos"


# --- the consumer the workers run (`CONSUMER_TYPE=bench.chaos_cluster:ChaosConsumer`) ---

class ChaosConsumer(OwnRedisClient, Consumer):
    """A small but complete pipeline: S3 download, a timed "predict", deterministic S3 upload.

    Counts its executions in `chaos:executions:{key}` (at-least-once is allowed; the harness
    reports re-executions) and writes the result zip under `output_key(job)`, so a re-run
    overwrites instead of adding a second result.
    """

    name = "chaos"
    required_fields = ("input_file_name",)

    def _consume(self, redis_hash: str) -> dict[str, Any]:
        import hashlib

        from redis_consumer.storage import output_key

        self.redis.incr(f"chaos:executions:{redis_hash}")
        work = float(self.job.fields.get("work_seconds") or 0.0)
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            with self.stage("download"):
                path = self.storage.download(self.job.fields["input_file_name"], tmp)
                data = Path(path).read_bytes()
            with self.stage("predict"):
                end = time.monotonic() + work
                while time.monotonic() < end:
                    self.check_deadline()
                    time.sleep(min(0.02, max(0.0, end - time.monotonic())))
                digest = hashlib.sha256(data).hexdigest()
            with self.stage("upload"):
                out = Path(tmp) / "result.zip"
                with zipfile.ZipFile(out, "w") as zf:
                    zf.writestr("result.json", json.dumps({"job": redis_hash, "sha256": digest}))
                    zf.writestr("log.txt", "\n".join(self.job_log))
                key, url = self.storage.upload(str(out), output_key(redis_hash))
        return {"output_file_name": key, "output_url": url}


# --- a TCP proxy that can refuse connections (S3 "down" without losing its objects) --------------

class TcpProxy:
    """Forward 127.0.0.1:port to a target; `down()` closes the listener and every open connection."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        from tests.helpers.net import free_port

        self.target = ("127.0.0.1", target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def up(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        sock.listen(128)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            _close(sock)  # shutdown() wakes the thread blocked in accept(), releasing the port
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            _close(c)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                _close(s)
                with self._lock:
                    self._conns.discard(s)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# --- the harness ---------------------------------------------------------------------------------

class Cluster:
    """Redis primary + replica + Sentinel, S3 behind a proxy, optional model server, K workers."""

    def __init__(self, workdir: Path, workers: int, pipeline: str) -> None:
        self.workdir = workdir
        self.n_workers = workers
        self.pipeline = pipeline
        self.servers: list[Any] = []
        self.workers: list[Any] = []
        self.retired: list[Any] = []
        self.model = None
        self._master_client = None

    # setup / teardown
    def start(self) -> None:
        import redis

        from tests.helpers.model_server import ModelServer
        from tests.helpers.net import wait_until
        from tests.helpers.redis_server import RedisServer, Sentinel
        from tests.helpers.s3_server import S3Server

        primary = RedisServer(appendonly=True).start()
        replica = RedisServer(appendonly=True, extra=["--replicaof", "127.0.0.1", str(primary.port)]).start()
        self.servers = [primary, replica]
        wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up",
                   message="replica sync")
        self.sentinel = Sentinel(primary.port).start()

        def knows_replica() -> bool:
            c = redis.Redis(port=self.sentinel.port, decode_responses=True)
            try:
                return len(c.execute_command("SENTINEL", "REPLICAS", self.sentinel.name)) >= 1
            except redis.RedisError:
                return False

        wait_until(knows_replica, timeout=30, message="sentinel to see the replica")
        self.s3 = S3Server(buckets=(BUCKET,)).start()
        self.proxy = TcpProxy(self.s3.port)
        self.proxy.up()
        self.model = ModelServer().start()
        for _ in range(self.n_workers):
            self.spawn_worker()

    def stop(self) -> None:
        for w in self.workers:
            w.kill()
        if self.model is not None:
            self.model.stop()
        self.proxy.down()
        self.s3.cleanup()
        self.sentinel.cleanup()
        for s in self.servers:
            s.cleanup()

    def worker_env(self) -> dict[str, str]:
        from tests.helpers.chaos_procs import worker_env

        env = worker_env(
            REDIS_HOST="127.0.0.1", REDIS_PORT=str(self.sentinel.port), QUEUE=QUEUE,
            STORAGE_BUCKET=f"s3://{BUCKET}", OUTPUT_URL_MODE="key", MAX_ATTEMPTS="10",
            RETRY_BACKOFF_CAP="1", STORAGE_RETRY_TIMEOUT="20", JOB_TIMEOUT="120", LOG_LEVEL="INFO",
            **self.s3.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{self.proxy.port}"),
        )
        env["CONSUMER_TYPE"] = "segmentation" if self.pipeline == "segmentation" else "bench.chaos_cluster:ChaosConsumer"
        if self.model is not None:
            env.update(TF_HOST="127.0.0.1", TF_PORT=str(self.model.port), GRPC_BACKOFF="0.2")
        return env

    def spawn_worker(self):
        from tests.helpers.chaos_procs import WorkerProcess

        w = WorkerProcess(self.worker_env(), log_dir=str(self.workdir)).start()
        self.workers.append(w)
        return w

    # Redis access for the producer and observer, following failovers
    def master(self):
        from redis.sentinel import Sentinel

        if self._master_client is None:
            s = Sentinel([("127.0.0.1", self.sentinel.port)], socket_timeout=2, decode_responses=True)
            self._master_client = s.master_for(self.sentinel.name, socket_timeout=3, decode_responses=True,
                                               retry=None)
        return self._master_client

    def call(self, fn, timeout: float = 60.0):
        """Run `fn(client)`, riding out Redis restarts and failovers."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn(self.master())
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError):
                if time.monotonic() > deadline:
                    raise
                self._master_client = None
                time.sleep(0.1)

    def server_on(self, port: int):
        return next(s for s in self.servers if s.port == port)


