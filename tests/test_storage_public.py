"""OUTPUT_URL_MODE=public results are really public (moto, GCS emulator); full and read-only stores.

The kiosk uploads results public-read and hands out the plain URL (kiosk-redis-consumer 0.17.2
redis_consumer/storage.py:234-277), which kiosk-client saves under `output_url.split('/')[-1]`
(kiosk-client kiosk_client/job.py:343-369).
"""

from __future__ import annotations

import errno
import json
import logging
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from redis_consumer import storage
from redis_consumer.errors import TransientError, UserError
from redis_consumer.settings import Settings
from redis_consumer.storage.base import StorageWriteError
from redis_consumer.storage.keys import output_key

pytestmark = pytest.mark.timeout(180)
JOB_KEY = "segmentation:my cells (1).tif:0f8fad5b-d9cb-469f-a165-70867728950e"
SANE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}\.zip$")


def anonymous_get(url: str) -> tuple[int, bytes]:
    """A plain HTTP GET with no credentials, as a browser or kiosk-client does."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def settings_for(server, url, **extra):
    return Settings.from_env({}, **server.env(), STORAGE_BUCKET=url, STORAGE_RETRY_TIMEOUT=5.0,
                             RETRY_BACKOFF_CAP=0.5, **extra)


def result_file(tmp_path, data=b"PK\x05\x06" + b"\x00" * 18):
    path = tmp_path / "result.zip"
    path.write_bytes(data)
    return str(path), data


# ---- S3 (moto enforces object ACLs for anonymous readers) ----

def test_s3_public_mode_result_is_anonymously_readable(s3_server, tmp_path):
    path, data = result_file(tmp_path)
    prefix = uuid.uuid4().hex[:8]
    signed = storage.get_client(f"s3://test-bucket/{prefix}", settings_for(s3_server, "s3://test-bucket", OUTPUT_URL_MODE="signed"))
    key, _ = signed.upload(path, "output/private.zip")
    assert anonymous_get(signed.public_url(key))[0] == 403  # the control: without the ACL it is private
    public = storage.get_client(f"s3://test-bucket/{prefix}", settings_for(s3_server, "s3://test-bucket", OUTPUT_URL_MODE="public"))
    assert public.check_public_access() is None
    key, url = public.upload(path, output_key(JOB_KEY))
    assert anonymous_get(url) == (200, data)
    parts = urllib.parse.urlsplit(url)
    assert not parts.query and not parts.fragment and url.startswith(s3_server.endpoint + "/test-bucket/")
    assert SANE_NAME.match(url.split("/")[-1]) and url.split("/")[-1] == key.split("/")[-1]
    grants = public.client.get_object_acl(Bucket="test-bucket", Key=f"{prefix}/{key}")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)


def test_s3_public_url_forms_without_an_endpoint():
    base = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": ""}
    client = storage.get_client("s3://kiosk-results", Settings.from_env({}, **base, AWS_REGION="us-west-2"))
    assert client.public_url("output/a b.zip") == "https://kiosk-results.s3.us-west-2.amazonaws.com/output/a%20b.zip"
    dotted = storage.get_client("s3://kiosk.results", Settings.from_env({}, **base, AWS_REGION="eu-west-1"))
    assert dotted.public_url("output/a.zip") == "https://s3.eu-west-1.amazonaws.com/kiosk.results/output/a.zip"


@pytest.fixture(scope="module")
def s3_special(s3_server):
    """Buckets that forbid object ACLs, deny writes to output/, on the shared moto server."""
    import boto3

    env = s3_server.env()
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    for name in ("enforced-bucket", "blocked-bucket", "policy-bucket"):
        s3.create_bucket(Bucket=name)
    s3.put_bucket_ownership_controls(Bucket="enforced-bucket", OwnershipControls={
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    s3.put_public_access_block(Bucket="blocked-bucket", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_policy(Bucket="policy-bucket", Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::policy-bucket/output/*"}]}))
    return s3


@pytest.mark.parametrize("bucket,words", [("enforced-bucket", "Object Ownership 'bucket owner enforced'"),
                                          ("blocked-bucket", "Block Public Access BlockPublicAcls")])
def test_s3_bucket_without_object_acls_is_named_once_at_start_and_uploads_still_work(
        s3_server, s3_special, tmp_path, caplog, bucket, words):
    settings = settings_for(s3_server, f"s3://{bucket}", OUTPUT_URL_MODE="public")
    caplog.set_level(logging.INFO, logger="redis_consumer.storage")
    problem = storage.check_public_access(settings)  # what cli/consume.py calls once at start
    assert problem and words in problem
    client = storage.get_client(f"s3://{bucket}", settings)
    assert client.check_public_access() == problem
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and words in lines[0] and "OUTPUT_URL_MODE=signed" in lines[0]
    assert "\n" not in lines[0] and f"s3://{bucket}" in lines[0]
    path, _ = result_file(tmp_path)
    key, url = client.upload(path, "output/r.zip")  # the job still finishes, without an ACL
    grants = client.client.get_object_acl(Bucket=bucket, Key=key)["Grants"]
    assert not any("AllUsers" in g["Grantee"].get("URI", "") for g in grants)
    assert "?" not in url


def test_signed_mode_does_not_ask(s3_server, s3_special):
    assert storage.check_public_access(settings_for(s3_server, "s3://enforced-bucket")) is None


def test_s3_write_denied_by_bucket_policy_names_bucket_and_cause(s3_server, s3_special, tmp_path):
    client = storage.get_client("s3://policy-bucket", settings_for(s3_server, "s3://policy-bucket"))
    path, _ = result_file(tmp_path)
    assert client.upload(path, "uploads/ok.zip")[0] == "uploads/ok.zip"  # the control: only output/ is denied
    with pytest.raises(StorageWriteError) as info:
        client.upload(path, "output/r.zip")
    message = str(info.value)
    assert isinstance(info.value, TransientError) and not isinstance(info.value, UserError)  # a system error
    assert "s3://policy-bucket" in message and "output/r.zip" in message and "403" in message
    assert "write permission" in message and "internal error" not in message


# ---- GCS emulator (it serves objects anonymously; we check the ACL the upload asks for) ----

class RecordingHttp:
    """Wraps the client's HTTP session to record every request URL (requests still go to the emulator)."""

    def __init__(self, client):
        self.urls: list[str] = []
        http = client.client._http
        original = http.request

        def request(method, url, *args, **kwargs):
            self.urls.append(f"{method} {url}")
            return original(method, url, *args, **kwargs)

        http.request = request


def test_gcs_public_mode_uploads_public_read_and_url_is_plain(gcs_server, tmp_path):
    path, data = result_file(tmp_path)
    prefix = uuid.uuid4().hex[:8]
    client = storage.get_client(f"gs://test-bucket/{prefix}",
                                settings_for(gcs_server, "gs://test-bucket", OUTPUT_URL_MODE="public"))
    assert client.check_public_access() is None
    seen = RecordingHttp(client)
    key, url = client.upload(path, output_key(JOB_KEY))
    uploads = [u for u in seen.urls if "/upload/" in u]
    assert uploads and all("predefinedAcl=publicRead" in u for u in uploads)
    assert anonymous_get(url) == (200, data)
    assert url == f"{gcs_server.host}/test-bucket/{prefix}/{key}" and "?" not in url
    assert SANE_NAME.match(url.split("/")[-1])
    signed = storage.get_client(f"gs://test-bucket/{prefix}", settings_for(gcs_server, "gs://test-bucket"))
    seen = RecordingHttp(signed)
    signed.upload(path, "output/private.zip")
    assert not any("predefinedAcl" in u for u in seen.urls)


def test_gcs_uniform_bucket_level_access_is_named_once_and_uploads_go_without_acl(gcs_server, tmp_path, caplog):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    admin = gcs.Client(project="t", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_server.host})
    bucket = admin.create_bucket(f"ubla-{uuid.uuid4().hex[:8]}")
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True
    bucket.patch()
    settings = settings_for(gcs_server, f"gs://{bucket.name}", OUTPUT_URL_MODE="public")
    caplog.set_level(logging.INFO, logger="redis_consumer.storage")
    problem = storage.check_public_access(settings)
    assert problem and "uniform bucket-level access" in problem
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and f"gs://{bucket.name}" in lines[0] and "bucket policy or IAM binding" in lines[0]
    client = storage.get_client(f"gs://{bucket.name}", settings)
    seen = RecordingHttp(client)
    path, _ = result_file(tmp_path)
    client.upload(path, "output/r.zip")
    assert not any("predefinedAcl" in u for u in seen.urls)


# ---- a full or read-only local store (a real tmpfs) ----

@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs mounted inside tmp_path (the tests run as root, which ignores chmod)."""
    mount = tmp_path / "bucket"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                            check=False)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); these tests need root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def local_client(root, **extra):
    return storage.get_client(f"file://{root}", Settings.from_env({}, STORAGE_RETRY_TIMEOUT=2.0, **extra))


def test_full_local_store_is_a_system_error_naming_it(tiny_tmpfs, tmp_path):
    client = local_client(tiny_tmpfs)
    big = tmp_path / "big.zip"
    big.write_bytes(b"x" * 200_000)
    with pytest.raises(TransientError) as info:
        client.upload(str(big), "output/big.zip")
    message = str(info.value)
    assert not isinstance(info.value, UserError)
    assert f"file://{tiny_tmpfs}" in message and "is full" in message and "no space left on device" in message
    assert "free space" in message and "output/big.zip" in message
    assert list((tiny_tmpfs / "output").iterdir()) == []  # no partial file left behind


def test_read_only_local_store(tiny_tmpfs, tmp_path):
    client = local_client(tiny_tmpfs)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    small = tmp_path / "r.zip"
    small.write_bytes(b"abc")
    with pytest.raises(StorageWriteError) as info:
        client.upload(str(small), "r.zip")
    message = str(info.value)
    assert f"file://{tiny_tmpfs}" in message and "read-only" in message and "make it writable" in message


def test_scratch_directory_full_while_downloading(tiny_tmpfs, tmp_path):
    bucket = tmp_path / "src"
    (bucket / "uploads").mkdir(parents=True)
    (bucket / "uploads" / "big.tif").write_bytes(b"x" * 200_000)
    client = local_client(bucket)
    with pytest.raises(TransientError, match=r"scratch directory could not hold 'uploads/big.tif' \(no space left"):
        client.download("uploads/big.tif", str(tiny_tmpfs))


def test_permission_denied_on_write_is_an_operator_problem(tmp_path, monkeypatch):
    """EACCES as root needs a patched syscall (root bypasses file modes): os-level, documented."""
    from redis_consumer.storage import local

    client = local_client(tmp_path / "bucket")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(local.tempfile, "mkstemp", denied)
    src = tmp_path / "r.zip"
    src.write_bytes(b"abc")
    with pytest.raises(StorageWriteError) as info:
        client.upload(str(src), "output/r.zip")
    assert "EACCES: permission denied" in str(info.value) and "write permission" in str(info.value)


# ---- ACLs refused at upload time (what AWS and GCS answer; moto and the emulator accept ACLs anyway) ----

class RefusingProxy:
    """A reverse proxy that answers requests matching `refuse(handler)` with a canned error, like the
    real service does for ACLs on an ACL-less bucket; everything else goes to the real server."""

    def __init__(self, target_port: int, refuse, status: int, content_type: str, payload: bytes) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.close_connection = True
                if refuse(self):
                    proxy.refused += 1
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                conn.request(self.command, self.path, body=body,
                             headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", resp.getheader("Content-Length") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("bucket,status,code,words", [
    ("test-bucket", 400, "AccessControlListNotSupported", "bucket owner enforced"),  # Object Ownership enforced
    ("blocked-bucket", 403, "AccessDenied", "Block Public Access"),  # AWS's answer under BlockPublicAcls
])
def test_s3_acl_refused_at_upload_falls_back_once(s3_server, s3_special, tmp_path, caplog, bucket, status, code,
                                                  words):
    payload = f"<Error><Code>{code}</Code><Message>refused</Message></Error>".encode()
    proxy = RefusingProxy(s3_server.port, lambda h: h.command == "PUT" and "x-amz-acl" in h.headers,
                          status, "application/xml", payload)
    try:
        settings = Settings.from_env({}, **s3_server.env(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}"),
                                     OUTPUT_URL_MODE="public", STORAGE_RETRY_TIMEOUT=5.0)
        client = storage.get_client(f"s3://{bucket}/{uuid.uuid4().hex[:8]}", settings)
        caplog.set_level(logging.WARNING, logger="redis_consumer.storage")
        path, data = result_file(tmp_path)
        for name in ("output/a.zip", "output/b.zip"):
            key, _url = client.upload(path, name)
            assert client.client.get_object(Bucket=bucket, Key=f"{client.prefix}/{key}")["Body"].read() == data
        assert proxy.refused == 1  # the second upload no longer asks for an ACL
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and words in lines[0]
    finally:
        proxy.close()


def test_gcs_acl_refused_at_upload_falls_back_once(gcs_server, tmp_path, caplog):
    payload = json.dumps({"error": {"code": 400, "message": "Cannot insert legacy ACL for an object when uniform "
                                    "bucket-level access is enabled. Read more at https://cloud.google.com/storage/"
                                    "docs/uniform-bucket-level-access"}}).encode()
    proxy = RefusingProxy(gcs_server.port, lambda h: "predefinedAcl=" in h.path, 400, "application/json", payload)
    try:
        settings = Settings.from_env({}, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{proxy.port}",
                                     OUTPUT_URL_MODE="public", STORAGE_RETRY_TIMEOUT=5.0)
        client = storage.get_client(f"gs://test-bucket/{uuid.uuid4().hex[:8]}", settings)
        caplog.set_level(logging.WARNING, logger="redis_consumer.storage")
        path, data = result_file(tmp_path)
        for name in ("output/a.zip", "output/b.zip"):
            _key, url = client.upload(path, name)
            assert anonymous_get(url.replace(str(proxy.port), str(gcs_server.port))) == (200, data)
        assert proxy.refused == 1
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "uniform bucket-level access" in lines[0]
    finally:
        proxy.close()
