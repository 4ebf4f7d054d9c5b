"""Security checks with real servers: Redis password and TLS through REDIS_URL, secrets and signed
URLs never in any log line, root refused inside a container, job hashes confined to the bucket.

Workers are real `redis-consumer consume` processes (tests/helpers/chaos_procs.py) with JSON logs;
every byte they print is searched for the planted secret values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.helpers.chaos_procs import ROOT, WorkerProcess, submit, worker_env
from tests.helpers.net import free_port, wait_final
from tests.helpers.redis_server import RedisServer

PASSWORD = "pw-Planted-Redis-7781"
AWS_SECRET = "awsSecretPlanted+9931/xyz"
SESSION_TOKEN = "sessionTokenPlanted4455"
SIGNATURE = "SigPlanted0123456789abcdef"
SECRETS = (PASSWORD, AWS_SECRET, SESSION_TOKEN, SIGNATURE)

pytestmark = pytest.mark.timeout(120)




def run_one_job(server_client: redis.Redis, env: dict[str, str], tmp_path: Path, **fields: str):
    """Start a worker, push one job, wait for it, stop the worker; (hash, exit code, output)."""
    worker = WorkerProcess(env, log_dir=str(tmp_path)).start()
    try:
        key = submit(server_client, env.get("QUEUE", "sec"), **fields)
        data = wait_final(server_client, key)
    finally:
        code = worker.terminate(30)
    return data, code, worker.output()


def assert_no_secrets(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"planted secret {secret[:6]}... found in {where}"


# --- password -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def password_server():
    server = RedisServer(extra=["--requirepass", PASSWORD])
    # RedisServer's readiness probe has no password: start it by hand, then wait with one
    server.proc = subprocess.Popen(server.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = server.client(password=PASSWORD)
    _wait_ping(client)
    yield server, client
    server.cleanup()


def _wait_ping(client: redis.Redis, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_password_in_redis_url_works_and_is_never_logged(password_server, tmp_path):
    server, client = password_server
    env = worker_env(REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", QUEUE="sec",
                     CONSUMER_TYPE="noop", LOG_LEVEL="DEBUG")
    data, code, out = run_one_job(client, env, tmp_path)
    assert data["status"] == "done", data
    assert code == 0
    assert out.strip(), "the worker printed nothing"
    assert_no_secrets(out, "worker output")


def test_redis_password_variable_works(password_server, tmp_path):
    server, client = password_server
    env = worker_env(REDIS_HOST="127.0.0.1", REDIS_PORT=str(server.port), REDIS_PASSWORD=PASSWORD,
                     QUEUE="sec2", CONSUMER_TYPE="noop", LOG_LEVEL="DEBUG")
    data, code, out = run_one_job(client, env, tmp_path)
    assert data["status"] == "done" and code == 0
    assert_no_secrets(out, "worker output")


def test_wrong_password_waits_without_logging_it(password_server, tmp_path):
    server, _ = password_server
    wrong = "pw-Wrong-Planted-5512"
    env = worker_env(REDIS_URL=f"redis://:{wrong}@127.0.0.1:{server.port}/0", QUEUE="sec3", CONSUMER_TYPE="noop")
    worker = WorkerProcess(env, log_dir=str(tmp_path)).start()
    deadline = time.monotonic() + 30
    while "waiting for redis" not in worker.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "waiting for redis" in worker.output(), worker.output()
    assert worker.alive(), worker.output()  # a bad password is waited out, not a crash loop
    code = worker.terminate(30)
    out = worker.output()
    assert code == 0
    assert wrong not in out and PASSWORD not in out
    assert "redis" in out.lower()  # it did say what it is waiting for


# --- TLS ----------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_certs(tmp_path_factory):
    """A private CA and a server certificate for 127.0.0.1 (SAN IP), made with openssl."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=redis-consumer test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "san.ext", cwd=d)
    return d


@pytest.fixture(scope="module")
def tls_server(tls_certs):
    """Redis answering TLS on `tls_port` (plain port kept only for the fixture's own readiness probe)."""
    tls_port = free_port()
    server = RedisServer(extra=[
        "--tls-port", str(tls_port), "--tls-cert-file", str(tls_certs / "server.pem"),
        "--tls-key-file", str(tls_certs / "server.key"), "--tls-ca-cert-file", str(tls_certs / "ca.pem"),
        "--tls-auth-clients", "no", "--requirepass", PASSWORD,
    ])
    server.proc = subprocess.Popen(server.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = server.client(password=PASSWORD)
    _wait_ping(client)
    yield server, tls_port, client
    server.cleanup()


def test_tls_redis_via_rediss_url(tls_server, tls_certs, tmp_path):
    _, tls_port, client = tls_server
    url = f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={tls_certs / 'ca.pem'}"
    env = worker_env(REDIS_URL=url, QUEUE="tls", CONSUMER_TYPE="noop", LOG_LEVEL="DEBUG")
    data, code, out = run_one_job(client, env, tmp_path)
    assert data["status"] == "done", out
    assert code == 0
    assert_no_secrets(out, "worker output")
    # the worker's connections really arrive on the TLS port
    info = client.info("stats")
    assert int(info.get("total_connections_received", 0)) > 0


def test_tls_port_rejects_plain_and_unverified_clients(tls_server, tls_certs):
    _, tls_port, _ = tls_server
    plain = redis.Redis(host="127.0.0.1", port=tls_port, password=PASSWORD, socket_timeout=2,
                        socket_connect_timeout=2)
    with pytest.raises(redis.RedisError):
        plain.ping()
    # without our CA the server certificate is not trusted
    untrusted = redis.Redis(host="127.0.0.1", port=tls_port, password=PASSWORD, ssl=True, socket_timeout=2,
                            socket_connect_timeout=2)
    with pytest.raises(redis.RedisError):
        untrusted.ping()
    trusted = redis.Redis(host="127.0.0.1", port=tls_port, password=PASSWORD, ssl=True,
                          ssl_ca_certs=str(tls_certs / "ca.pem"), socket_timeout=2)
    assert trusted.ping()


# --- secrets and signed URLs never in logs ------------------------------------------------------

def test_planted_secrets_and_signed_urls_never_reach_any_log(redis_server, tmp_path):
    client = redis_server.client()
    client.flushall()
    env = worker_env(
        REDIS_URL=redis_server.url, QUEUE="leak", CONSUMER_TYPE="tests.test_security_consumers:LeakyConsumer",
        LOG_LEVEL="DEBUG", AWS_SECRET_ACCESS_KEY=AWS_SECRET, AWS_ACCESS_KEY_ID="AKIAPLANTEDKEY",
        AWS_SESSION_TOKEN=SESSION_TOKEN, REDIS_PASSWORD=PASSWORD, PLANTED_PASSWORD=PASSWORD,
        PLANTED_SIGNATURE=SIGNATURE, MAX_ATTEMPTS="1",
    )
    worker = WorkerProcess(env, log_dir=str(tmp_path)).start()
    try:
        good = submit(client, "leak")
        bad = submit(client, "leak", boom="1")
        good_data = wait_final(client, good)
        bad_data = wait_final(client, bad)
    finally:
        code = worker.terminate(30)
    out = worker.output()
    assert code == 0
    assert good_data["status"] == "done"
    assert SIGNATURE in good_data["output_url"]  # the hash carries the real URL for the user
    assert bad_data["status"] == "failed"
    lines = [line for line in out.splitlines() if line.strip()]
    assert any("uploaded result to" in line for line in lines), out[-2000:]
    for line in lines:
        json.loads(line)  # LOG_FORMAT=json: every line is one JSON object (tracebacks included)
    assert_no_secrets(out, "worker output")
    # the job's own log (shown by `redis-consumer logs`, shipped in result zips) is scrubbed too
    for key in (good, bad):
        assert_no_secrets("\n".join(client.lrange(f"logs:{key}", 0, -1)), f"logs:{key}")
    # a failure reason is user-facing: no credentials in it either
    assert_no_secrets(bad_data.get("reason", "") + bad_data.get("last_error", ""), "failure reason")


# --- root inside a container --------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs to run as root")
def test_root_refused_inside_container_unless_allowed(redis_server, tmp_path):
    env = worker_env(REDIS_URL=redis_server.url, QUEUE="root", CONSUMER_TYPE="noop",
                     KUBERNETES_SERVICE_HOST="10.0.0.1")
    env.pop("ALLOW_ROOT", None)
    proc = subprocess.run([sys.executable, "-m", "redis_consumer.cli.main", "consume"], env=env, cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "root" in proc.stderr and "ALLOW_ROOT" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback

    env["ALLOW_ROOT"] = "true"
    worker = WorkerProcess(env, log_dir=str(tmp_path)).start()
    client = redis_server.client()
    key = submit(client, "root")
    assert wait_final(client, key)["status"] == "done"
    assert worker.terminate(30) == 0


# --- the job hash cannot point outside the bucket -----------------------------------------------

TRAVERSALS = ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "..", "a/../../../etc/passwd",
              "s3://other-bucket/key", "file:///etc/passwd"]


@pytest.mark.parametrize("key", TRAVERSALS)
def test_local_bucket_confines_keys(tmp_path, key):
    from redis_consumer import storage
    from redis_consumer.errors import UserError

    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (tmp_path / "outside.txt").write_text("secret outside the bucket")
    client = storage.get_client(f"file://{bucket}")
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(UserError):
        client.download(key, str(dest))
    assert not any(dest.iterdir())


@pytest.fixture(scope="module")
def s3_two_buckets():
    from tests.helpers.s3_server import S3Server

    server = S3Server(buckets=("jobs-bucket", "other-bucket")).start()
    yield server
    server.cleanup()


S3_ESCAPES = ["../other-bucket/secret.txt", "/other-bucket/secret.txt", "tenant-a/../../other-bucket/secret.txt",
              "s3://other-bucket/secret.txt", "tenant-b/secret.txt", "tenant-a/../tenant-b/secret.txt"]


@pytest.mark.parametrize("key", S3_ESCAPES)
def test_s3_prefix_confines_keys(s3_two_buckets, tmp_path, key):
    """A job hash naming another bucket, another tenant's prefix or a `..` path reads nothing."""
    import boto3

    from redis_consumer import storage
    from redis_consumer.errors import UserError
    from redis_consumer.settings import Settings

    s3 = boto3.client("s3", endpoint_url=s3_two_buckets.endpoint, region_name="us-east-1",
                      aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-key")
    s3.put_object(Bucket="other-bucket", Key="secret.txt", Body=b"other bucket")
    s3.put_object(Bucket="jobs-bucket", Key="tenant-b/secret.txt", Body=b"other tenant")
    s3.put_object(Bucket="jobs-bucket", Key="tenant-a/ok.txt", Body=b"mine")
    settings = Settings.from_env(s3_two_buckets.env(), STORAGE_BUCKET="s3://jobs-bucket/tenant-a")
    client = storage.get_client("s3://jobs-bucket/tenant-a", settings=settings)
    assert Path(client.download("ok.txt", str(tmp_path))).read_bytes() == b"mine"  # the control
    dest = tmp_path / "dl"
    dest.mkdir()
    with pytest.raises(UserError):
        client.download(key, str(dest))
    assert not any(dest.iterdir())
