"""One storage test suite, run against the local backend, a real moto S3 server and a real GCS emulator."""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from redis_consumer import storage
from redis_consumer.errors import TransientError, UserError
from redis_consumer.settings import Settings
from redis_consumer.storage.base import StorageAccessError
from tests.helpers.s3_server import S3Server

pytestmark = pytest.mark.timeout(180)
BACKENDS = ("local", "s3", "gcs")
BIG = 64 * 1024 * 1024



@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(BIG // len(block)):
            chunk = bytes([i % 251]) + block[1:]
            f.write(chunk)
            digest.update(chunk)
    return path, digest.hexdigest()


class Backend:
    """Builds clients of one kind with test settings (each call may change settings)."""

    def __init__(self, kind, request, tmp_path):
        self.kind = kind
        self.tmp = tmp_path
        self.prefix = f"t{uuid.uuid4().hex[:8]}"
        if kind == "s3":
            self.server = request.getfixturevalue("s3_server")
            self.env = self.server.env()
            self.url = f"s3://test-bucket/{self.prefix}"
        elif kind == "gcs":
            self.server = request.getfixturevalue("gcs_server")
            self.env = self.server.env()
            self.url = f"gs://test-bucket/{self.prefix}"
        else:
            self.server = None
            self.env = {}
            self.url = f"file://{tmp_path / 'bucket'}"

    def settings(self, **overrides):
        values = {"STORAGE_RETRY_TIMEOUT": 30.0, "RETRY_BACKOFF_CAP": 1.0, **self.env, **overrides}
        return Settings.from_env({}, **values)

    def client(self, url=None, **overrides):
        return storage.get_client(url or self.url, self.settings(**overrides))


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    return Backend(request.param, request, tmp_path)


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.mark.parametrize("size", [0, 1, 5000])
def test_round_trip_small(backend, tmp_path, size):
    client = backend.client(OUTPUT_URL_MODE="key")
    data = os.urandom(size)
    key, url = client.upload(write(tmp_path / "src" / "in.bin", data), "uploads/in.bin")
    assert (key, url) == ("uploads/in.bin", "uploads/in.bin")
    assert client.exists(key) and client.size(key) == size
    path = client.download(key, str(tmp_path / "dl"))
    assert os.path.basename(path) == "in.bin"
    assert Path(path).read_bytes() == data
    assert sorted(os.listdir(tmp_path / "dl")) == ["in.bin"]  # no temporary files left behind
    client.delete(key)
    assert not client.exists(key)
    client.delete(key)  # deleting twice is fine


def test_round_trip_64mb(backend, tmp_path, big_file):
    path, digest = big_file
    client = backend.client(OUTPUT_URL_MODE="key")
    client.upload(str(path), "uploads/big.bin")
    assert client.size("uploads/big.bin") == BIG
    out = client.download("uploads/big.bin", str(tmp_path / "dl"))
    assert sha(out) == digest
    client.delete("uploads/big.bin")


def test_missing_key_is_user_error_naming_it(backend, tmp_path):
    client = backend.client()
    with pytest.raises(UserError, match="nothing-here/cells.tif"):
        client.download("nothing-here/cells.tif", str(tmp_path / "dl"))
    with pytest.raises(UserError, match="nothing-here/cells.tif"):
        client.size("nothing-here/cells.tif")
    assert not client.exists("nothing-here/cells.tif")
    assert not os.path.exists(tmp_path / "dl") or os.listdir(tmp_path / "dl") == []


@pytest.mark.parametrize("bad", [
    "../secret.txt", "uploads/../../secret.txt", "/etc/passwd", "uploads/./a.tif", "uploads//a.tif",
    "s3://other-bucket/a.tif", "gs://other-bucket/a.tif", "file:///etc/passwd", "http://example.com/a.tif",
    "a\\..\\b.tif", "a\x00b.tif", "",
])
def test_traversal_and_foreign_keys_rejected(backend, tmp_path, bad):
    client = backend.client()
    src = write(tmp_path / "x.bin", b"x")
    for op in (lambda: client.download(bad, str(tmp_path / "dl")), lambda: client.upload(src, bad),
               lambda: client.exists(bad), lambda: client.delete(bad), lambda: client.signed_url(bad, 60)):
        with pytest.raises(UserError) as info:
            op()
        if bad.strip() and "\x00" not in bad:
            assert bad in str(info.value)
    assert not (tmp_path / "secret.txt").exists()


def test_full_url_inside_bucket_is_accepted(backend, tmp_path):
    client = backend.client()
    client.upload(write(tmp_path / "a.bin", b"abc"), "uploads/a.bin")
    full = f"{backend.url}/uploads/a.bin"
    assert client.size(full) == 3
    assert Path(client.download(full, str(tmp_path / "dl"))).read_bytes() == b"abc"


def test_local_symlink_escape_rejected(tmp_path):
    root = tmp_path / "bucket"
    client = storage.get_client(f"file://{root}", Settings.from_env({}))
    write(tmp_path / "outside" / "secret.txt", b"secret")
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(UserError, match="link/secret.txt"):
        client.download("link/secret.txt", str(tmp_path / "dl"))


def test_read_only_download(backend, tmp_path):
    """Same bytes and checks on every backend; a folder bucket links its file (no copy), and the
    download keeps its bytes when the object is replaced or deleted."""
    client = backend.client(MAX_INPUT_BYTES=1000, ALLOWED_INPUT_PREFIXES=("uploads/",))
    client.upload(write(tmp_path / "a.bin", b"first"), "uploads/a.bin")
    client.upload(write(tmp_path / "big.bin", b"x" * 2000), "uploads/big.bin")
    client.upload(write(tmp_path / "p.bin", b"private"), "private/p.bin")
    path = client.download("uploads/a.bin", str(tmp_path / "dl"), read_only=True)
    assert Path(path).read_bytes() == b"first" and sorted(os.listdir(tmp_path / "dl")) == ["a.bin"]
    if backend.kind == "local":
        assert os.path.samefile(path, tmp_path / "bucket" / "uploads" / "a.bin")
    client.upload(write(tmp_path / "b.bin", b"second"), "uploads/a.bin")
    client.delete("uploads/a.bin")
    assert Path(path).read_bytes() == b"first"
    with pytest.raises(UserError, match="1000-byte limit"):
        client.download("uploads/big.bin", str(tmp_path / "dl2"), read_only=True)
    with pytest.raises(UserError, match="private/p.bin"):
        client.download("private/p.bin", str(tmp_path / "dl2"), read_only=True)
    with pytest.raises(UserError, match="does not exist"):
        client.download("uploads/a.bin", str(tmp_path / "dl2"), read_only=True)
    assert not (tmp_path / "dl2").exists() or os.listdir(tmp_path / "dl2") == []


def test_upload_that_gives_the_file_up(backend, tmp_path):
    """Same object and URL on every backend; a folder bucket renames the file into place."""
    client = backend.client(OUTPUT_URL_MODE="key")
    src = write(tmp_path / "scratch" / "result.zip", b"zip bytes")
    assert client.upload(src, "output/r.zip", move=True) == ("output/r.zip", "output/r.zip")
    assert Path(client.download("output/r.zip", str(tmp_path / "dl"))).read_bytes() == b"zip bytes"
    if backend.kind == "local":
        assert not os.path.exists(src) and os.listdir(tmp_path / "bucket" / "output") == ["r.zip"]
        assert (os.stat(tmp_path / "bucket" / "output" / "r.zip").st_mode & 0o777) == 0o644
    again = write(tmp_path / "scratch" / "result.zip", b"second run")
    client.upload(again, "output/r.zip", move=True)  # overwrites, as a copy does
    assert Path(client.download("output/r.zip", str(tmp_path / "dl2"))).read_bytes() == b"second run"


def test_local_upload_copies_what_it_cannot_move(tmp_path, monkeypatch):
    client = storage.get_client(f"file://{tmp_path / 'bucket'}", Settings.from_env({}))
    real = write(tmp_path / "real.zip", b"abc")
    os.symlink(real, tmp_path / "link.zip")
    client.upload(str(tmp_path / "link.zip"), "output/a.zip", move=True)  # a symlink: its file is copied
    target = tmp_path / "bucket" / "output" / "a.zip"
    assert not target.is_symlink() and target.read_bytes() == b"abc" and os.path.islink(tmp_path / "link.zip")

    renames, replace = [], os.replace

    def first_cross_device(src, dst, **kw):  # the scratch folder on another file system than the bucket
        renames.append(src)
        if len(renames) == 1:
            raise OSError(18, "Invalid cross-device link")
        return replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", first_cross_device)
    client.upload(real, "output/b.zip", move=True)
    assert (tmp_path / "bucket" / "output" / "b.zip").read_bytes() == b"abc"
    assert renames[0] == real and os.path.exists(real)  # copied, so still there


def test_local_read_only_download_copies_when_it_cannot_link(tmp_path, monkeypatch):
    client = storage.get_client(f"file://{tmp_path / 'bucket'}", Settings.from_env({}))
    client.upload(write(tmp_path / "a.bin", b"abc"), "uploads/a.bin")

    def cross_device(src, dst, **kw):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)  # TMPDIR on another file system than the bucket
    path = client.download("uploads/a.bin", str(tmp_path / "dl"), read_only=True)
    assert Path(path).read_bytes() == b"abc" and not os.path.samefile(path, tmp_path / "bucket" / "uploads" / "a.bin")
    assert sorted(os.listdir(tmp_path / "dl")) == ["a.bin"]


def test_local_read_only_download_refuses_escaping_links(tmp_path):
    root = tmp_path / "bucket"
    client = storage.get_client(f"file://{root}", Settings.from_env({}))
    write(tmp_path / "outside" / "secret.txt", b"secret")
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(UserError, match="link/secret.txt"):
        client.download("link/secret.txt", str(tmp_path / "dl"), read_only=True)


def test_size_limit_checked_before_download(backend, tmp_path):
    client = backend.client(MAX_INPUT_BYTES=1000)
    client.upload(write(tmp_path / "big.bin", b"x" * 2000), "uploads/too-big.bin")
    client.upload(write(tmp_path / "ok.bin", b"x" * 1000), "uploads/ok.bin")
    with pytest.raises(UserError, match=r"uploads/too-big\.bin.*1000-byte limit"):
        client.download("uploads/too-big.bin", str(tmp_path / "dl"))
    assert not (tmp_path / "dl").exists() or os.listdir(tmp_path / "dl") == []
    assert os.path.getsize(client.download("uploads/ok.bin", str(tmp_path / "dl"))) == 1000


def test_allowed_input_prefixes(backend, tmp_path):
    client = backend.client(ALLOWED_INPUT_PREFIXES=("uploads/",))
    src = write(tmp_path / "a.bin", b"abc")
    client.upload(src, "uploads/a.bin")
    client.upload(src, "private/a.bin")  # writing is not restricted, reading is
    assert client.download("uploads/a.bin", str(tmp_path / "dl"))
    with pytest.raises(UserError, match="private/a.bin"):
        client.download("private/a.bin", str(tmp_path / "dl"))
    assert client.download("private/a.bin", str(tmp_path / "dl2"), check_prefixes=False)  # worker-written


def test_output_key_rerun_overwrites(backend, tmp_path):
    client = backend.client(OUTPUT_URL_MODE="key")
    job = "segmentation:cells.tif:" + uuid.uuid4().hex
    key = storage.output_key(job)
    assert key == storage.output_key(job) and key.startswith("output/") and key.endswith(".zip")
    client.upload(write(tmp_path / "1.zip", b"first"), key)
    assert client.upload(write(tmp_path / "2.zip", b"second run"), key) == (key, key)
    assert Path(client.download(key, str(tmp_path / "dl"))).read_bytes() == b"second run"


def fetch(url: str) -> bytes:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(url[len("file://"):])).read_bytes()
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_result_urls_by_mode(backend, tmp_path):
    src = write(tmp_path / "r.zip", b"result bytes")
    signed = backend.client(OUTPUT_URL_MODE="signed", SIGNED_URL_TTL=900)
    key, url = signed.upload(src, "output/r.zip")
    assert fetch(url) == b"result bytes"
    public = backend.client(OUTPUT_URL_MODE="public")
    if backend.kind == "s3":  # public mode assumes the operator made results readable; moto enforces ACLs
        public.client.put_object_acl(Bucket="test-bucket", Key=f"{backend.prefix}/{key}", ACL="public-read")
    assert fetch(public.url_for(key)) == b"result bytes"
    assert "?" not in public.url_for(key)
    assert backend.client(OUTPUT_URL_MODE="key").url_for(key) == key


def test_s3_presigned_url_downloads_with_urllib_and_expires(request, tmp_path):
    backend = Backend("s3", request, tmp_path)
    client = backend.client()
    client.upload(write(tmp_path / "r.zip", b"signed payload"), "output/r.zip")
    url = client.signed_url("output/r.zip", 600)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"] and "X-Amz-Signature" in query
    assert backend.server.endpoint in url
    assert fetch(url) == b"signed payload"
    long = urllib.parse.parse_qs(urllib.parse.urlsplit(client.signed_url("output/r.zip", 10**7)).query)
    assert long["X-Amz-Expires"] == [str(7 * 24 * 3600)]  # SigV4 maximum


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_transient_outage_is_retried(request, tmp_path, kind):
    backend = Backend(kind, request, tmp_path)
    client = backend.client(OUTPUT_URL_MODE="key")
    src = write(tmp_path / "in.bin", os.urandom(300_000))
    if kind == "gcs":
        client.upload(src, "uploads/before.bin")  # the emulator keeps data on disk across restarts
    result: dict = {}

    def work():
        try:
            result["upload"] = client.upload(src, "uploads/during.bin")
            if kind == "gcs":
                result["download"] = client.download("uploads/before.bin", str(tmp_path / "dl"))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            result["error"] = exc

    backend.server.stop()
    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(1.5)  # the client is now retrying against a closed port
    assert thread.is_alive(), result
    backend.server.start()
    thread.join(60)
    assert "error" not in result, result
    assert result["upload"] == ("uploads/during.bin", "uploads/during.bin")
    assert client.size("uploads/during.bin") == 300_000
    if kind == "gcs":
        assert Path(result["download"]).read_bytes() == Path(src).read_bytes()


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_outage_longer_than_budget_is_transient_error(request, tmp_path, kind):
    backend = Backend(kind, request, tmp_path)
    client = backend.client(STORAGE_RETRY_TIMEOUT=1.0)
    backend.server.stop()
    try:
        with pytest.raises(TransientError, match="uploads/x.bin"):
            client.size("uploads/x.bin")
    finally:
        backend.server.start()


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_missing_bucket_fails_fast(request, tmp_path, kind, caplog):
    backend = Backend(kind, request, tmp_path)
    scheme = "s3" if kind == "s3" else "gs"
    client = backend.client(url=f"{scheme}://no-such-bucket-{uuid.uuid4().hex[:8]}")
    caplog.set_level(logging.WARNING, logger="redis_consumer.storage")
    with pytest.raises(StorageAccessError, match="does not exist"):
        client.download("uploads/a.tif", str(tmp_path / "dl"))
    with pytest.raises(StorageAccessError, match="does not exist"):
        client.upload(write(tmp_path / "a.bin", b"a"), "uploads/a.bin")
    assert not [r for r in caplog.records if "retry" in r.getMessage()]  # failed fast, no retries


def test_credentials_never_in_logs_or_errors(request, tmp_path):
    """Plant credential values, exercise success and failure paths, and look for them everywhere."""
    key_id, secret = "AKIAPLANTEDKEYID0001", "planted/SECRET+value-" + uuid.uuid4().hex
    backend = Backend("s3", request, tmp_path)
    backend.env = {**backend.env, "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # everything, botocore included, no redaction filter
    messages = []
    try:
        client = backend.client(STORAGE_RETRY_TIMEOUT=1.0)
        src = write(tmp_path / "a.bin", b"data")
        client.upload(src, "uploads/a.bin")
        client.download("uploads/a.bin", str(tmp_path / "dl"))
        messages.append(repr(client))
        for bad in (lambda: client.download("uploads/missing.bin", str(tmp_path / "dl")),
                    lambda: client.download("../x", str(tmp_path / "dl")),
                    lambda: backend.client(url="s3://no-such-bucket-xyz").upload(src, "a.bin")):
            with pytest.raises(UserError) as info:
                bad()
            messages.append(str(info.value))
        backend.server.stop()
        try:
            with pytest.raises(TransientError) as info:
                client.upload(src, "uploads/b.bin")
            messages.append(str(info.value))
        finally:
            backend.server.start()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = stream.getvalue()
    assert "retry" in logged  # the outage was logged
    for text in [logged, *messages]:
        assert secret not in text
    app_lines = [line for line in logged.splitlines() if line.startswith("redis_consumer")]
    for text in [*app_lines, *messages]:
        assert key_id not in text
        assert "X-Amz-Signature" not in text


def fake_service_account(path):
    """A throwaway service-account JSON with a freshly generated RSA key (never a real credential)."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    info = {"type": "service_account", "project_id": "rc-test", "private_key_id": "planted" + uuid.uuid4().hex,
            "private_key": pem, "client_email": "signer@rc-test.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token"}
    path.write_text(json.dumps(info))
    return key, info


def test_gcs_signed_url_with_service_account(request, tmp_path):
    """V4-signed, time-limited, verifiable with the key's public half; the emulator serves it (unchecked)."""
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key, info = fake_service_account(tmp_path / "sa.json")
    backend = Backend("gcs", request, tmp_path)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        client = backend.client(GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "sa.json"), SIGNED_URL_TTL=600)
        key_name, url = client.upload(write(tmp_path / "r.zip", b"gcs result"), "output/r.zip")
        with pytest.raises(UserError) as missing:
            client.download("uploads/missing.tif", str(tmp_path / "dl"))
    finally:
        logging.getLogger().removeHandler(handler)
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert parts.netloc == urllib.parse.urlsplit(backend.server.host).netloc
    assert parts.path == f"/test-bucket/{backend.prefix}/output/r.zip"
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "600"
    assert query["X-Goog-Credential"].startswith(info["client_email"] + "/")
    signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 300
    # Recompute the V4 string-to-sign and check the signature with the public key.
    canonical_query = "&".join(p for p in parts.query.split("&") if not p.startswith("X-Goog-Signature="))
    canonical_request = "\n".join(["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host",
                                   "UNSIGNED-PAYLOAD"])
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope,
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    key.public_key().verify(bytes.fromhex(query["X-Goog-Signature"]), string_to_sign.encode(),
                            padding.PKCS1v15(), hashes.SHA256())
    assert fetch(url) == b"gcs result"  # the emulator ignores the signature; real GCS checks it
    long = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(client.signed_url(key_name, 10**7)).query))
    assert long["X-Goog-Expires"] == str(7 * 24 * 3600)  # V4 maximum
    secret_bits = [info["private_key_id"], *info["private_key"].splitlines()[1:4]]
    for text in (stream.getvalue(), str(missing.value), repr(client)):
        assert not any(bit in text for bit in secret_bits)
        assert "X-Goog-Signature" not in text


def test_s3_access_denied_fails_fast_without_credentials_in_message(tmp_path, caplog):
    """A server that checks credentials answers 403 to unknown keys: no retries, a clear reason, no secrets."""
    server = S3Server(buckets=("auth-bucket",), auth=True).start()
    key_id, secret = "AKIAUNKNOWNKEY000042", "planted-" + uuid.uuid4().hex
    try:
        settings = Settings.from_env({}, **server.env(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret),
                                     STORAGE_RETRY_TIMEOUT=30.0)
        client = storage.get_client("s3://auth-bucket", settings)
        caplog.set_level(logging.WARNING, logger="redis_consumer.storage")
        for op in (lambda: client.download("uploads/a.tif", str(tmp_path / "dl")),
                   lambda: client.upload(write(tmp_path / "a.bin", b"a"), "output/a.zip")):
            with pytest.raises(StorageAccessError, match="denied") as info:
                op()
            assert key_id not in str(info.value) and secret not in str(info.value)
            assert info.value.__cause__ is None and info.value.__suppress_context__
        assert not [r for r in caplog.records if "retry" in r.getMessage()]  # failed fast, no retries
    finally:
        server.cleanup()


def test_gcs_uploads_carry_if_generation_match(request, tmp_path, monkeypatch):
    """0 for a new object, the current generation when overwriting (what makes retried uploads safe)."""
    from google.cloud.storage import Blob

    seen = []
    original = Blob.upload_from_filename

    def spy(self, filename, *args, **kwargs):
        seen.append(kwargs.get("if_generation_match"))
        return original(self, filename, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_filename", spy)
    client = Backend("gcs", request, tmp_path).client(OUTPUT_URL_MODE="key")
    src = write(tmp_path / "a.bin", b"a")
    client.upload(src, "output/a.zip")
    client.upload(src, "output/a.zip")
    assert seen[0] == 0 and isinstance(seen[1], int) and seen[1] > 0


class ThrottlingProxy:
    """An HTTP reverse proxy that answers the first `failures` requests with 503 SlowDown."""

    def __init__(self, target_port: int, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_one(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.requests += 1
                if proxy.requests <= proxy.failures:
                    self.close_connection = True
                    payload = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.close_connection = True  # no idle keep-alive connections outlive the test
                conn = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body,
                                 headers={k: v for k, v in self.headers.items() if k.lower() != "connection"})
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:
                    self.send_error(502)
                    return
                self.send_response(resp.status)
                self.send_header("Connection", "close")
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _client_through(proxy: ThrottlingProxy, backend: Backend, kind: str):
    """`backend`'s storage client with every request sent through `proxy`."""
    endpoint = f"http://127.0.0.1:{proxy.port}"
    override = {"AWS_ENDPOINT_URL": endpoint} if kind == "s3" else {"STORAGE_EMULATOR_HOST": endpoint}
    return backend.client(OUTPUT_URL_MODE="key", **override)


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_throttling_and_5xx_are_retried(request, tmp_path, kind):
    """More 503s than the SDK's own retries absorb: the outer retry loop still gets the job done."""
    backend = Backend(kind, request, tmp_path)
    proxy = ThrottlingProxy(backend.server.port, failures=5)
    try:
        client = _client_through(proxy, backend, kind)
        data = os.urandom(5000)
        assert client.upload(write(tmp_path / "a.bin", data), "uploads/a.bin") == ("uploads/a.bin",) * 2
        assert proxy.requests > 5  # the throttled attempts happened
        proxy.failures = proxy.requests + 1
        assert Path(client.download("uploads/a.bin", str(tmp_path / "dl"))).read_bytes() == data
    finally:
        proxy.close()


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_warm_makes_one_read_creates_nothing_and_never_raises(request, tmp_path, kind):
    """The worker's warm-up calls `warm()` before the first job: one request, its answer ignored."""
    backend = Backend(kind, request, tmp_path)
    proxy = ThrottlingProxy(backend.server.port, failures=0)
    try:
        client = _client_through(proxy, backend, kind)
        assert client.warm() is None
        assert client.warm() is None
        # one request each; google-cloud-storage 3 adds one fetch of the bucket's metadata per
        # client, in a thread of its own (the first job would make it just the same)
        assert proxy.requests == 2 if kind == "s3" else 2 <= proxy.requests <= 3
    finally:
        proxy.close()
    assert not backend.client().exists(client.WARM_NAME)
    assert client.warm() is None  # the server is gone now: still no exception


def test_warm_on_a_folder_bucket_touches_nothing(tmp_path):
    client = Backend("local", None, tmp_path).client()
    client.warm()
    assert not (tmp_path / "bucket").exists() or list((tmp_path / "bucket").rglob("*")) == []


def test_s3_credentials_from_an_assumed_role(request, tmp_path, monkeypatch):
    """A profile that assumes a role (as IRSA and `role_arn` profiles do) makes botocore build an
    STS client through our S3-only data loader: that must work, and the bucket must be usable."""
    backend = Backend("s3", request, tmp_path)
    (tmp_path / "credentials").write_text("[base]\naws_access_key_id = AKIABASEKEY0000001\n"
                                          "aws_secret_access_key = base-secret\n")
    (tmp_path / "config").write_text("[profile worker]\nrole_arn = arn:aws:iam::123456789012:role/worker\n"
                                     "source_profile = base\nregion = us-east-1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_PROFILE", "worker")
    monkeypatch.setenv("AWS_ENDPOINT_URL", backend.server.endpoint)  # STS too goes to moto
    client = backend.client(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    client.upload(write(tmp_path / "a.bin", b"assumed"), "uploads/a.bin")
    assert Path(client.download("uploads/a.bin", str(tmp_path / "dl"))).read_bytes() == b"assumed"
    credentials = client.client._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key != "AKIABASEKEY0000001"  # the role's, from STS, not the base profile's
    assert credentials.token
