"""Fast storage tests without servers: URL parsing, key rules, output names, retry policy, lazy imports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from redis_consumer import storage
from redis_consumer.errors import ConfigError, TransientError, UserError
from redis_consumer.settings import Settings
from redis_consumer.storage import base
from redis_consumer.storage.keys import confine, output_key


@pytest.mark.parametrize("url, parsed", [
    ("s3://my-bucket", ("s3", "my-bucket", "")),
    ("s3://my-bucket/some/prefix/", ("s3", "my-bucket", "some/prefix")),
    ("gs://bucket.example.com/p", ("gs", "bucket.example.com", "p")),
    ("file:///tmp/rc-bucket", ("file", "/tmp/rc-bucket", "")),
    ("file://localhost/srv/data/", ("file", "/srv/data", "")),
])
def test_parse_url(url, parsed):
    assert storage.parse_url(url) == parsed


@pytest.mark.parametrize("url", [
    "", "bucket", "ftp://bucket", "s3://", "s3://UPPER", "s3://a", "s3://bucket/../x", "s3://bucket//x",
    "gs://bucket?x=1", "file://relative/dir", "file:///", "http://example.com/bucket",
])
def test_bad_urls_are_config_errors(url):
    with pytest.raises(ConfigError, match="STORAGE_BUCKET"):
        storage.parse_url(url)


def test_credentials_in_url_are_refused_without_echo():
    with pytest.raises(ConfigError) as info:
        storage.get_client("s3://AKIDSECRET:hunter2secret@bucket/x", Settings.from_env({}))
    assert "hunter2secret" not in str(info.value) and "AKIDSECRET" not in str(info.value)


def test_confine_accepts_relative_and_in_bucket_urls():
    assert confine("uploads/a.tif", "s3", "b", "") == "uploads/a.tif"
    assert confine("s3://b/p/uploads/a.tif", "s3", "b", "p") == "uploads/a.tif"
    assert confine("file:///data/bucket/a.tif", "file", "/data/bucket", "") == "a.tif"
    for bad in ("s3://b/other/a.tif", "s3://c/p/a.tif", "gs://b/p/a.tif", "file:///data/bucket-2/a.tif"):
        scheme, bucket, prefix = ("file", "/data/bucket", "") if bad.startswith("file") else ("s3", "b", "p")
        with pytest.raises(UserError, match="outside"):
            confine(bad, scheme, bucket, prefix)
    with pytest.raises(UserError, match="longer than"):
        confine("a" * 1100, "s3", "b", "")


def test_output_key_is_deterministic_safe_and_distinct():
    job = "segmentation:cells.tif:0123456789abcdef0123456789abcdef"
    key = output_key(job)
    assert key == output_key(job)
    assert key.startswith("output/segmentation_cells.tif_0123456789abcdef") and key.endswith(".zip")
    assert output_key("plain-name") == "output/plain-name.zip"
    assert output_key("a:b") != output_key("a_b")
    assert output_key(job, ".tif").endswith(".tif")
    for weird in ("../../etc/passwd", "/abs/path", "x/../y", "\x00", "..", "a" * 5000):
        name = output_key(weird)
        assert name.startswith("output/") and "/" not in name[len("output/"):] and ".." not in name
        assert len(name) < 200
        confine(name, "s3", "b", "")  # always a valid key


class FlakyClient(base.StorageClient):
    """Fails `_stat` with the given kinds, then succeeds."""

    scheme = "s3"

    def __init__(self, kinds, **settings):
        values = {"STORAGE_RETRY_TIMEOUT": 10.0, "RETRY_BACKOFF_CAP": 0.01, **settings}
        super().__init__("s3://b", "b", "", Settings.from_env({}, **values))
        self.kinds = list(kinds)
        self.calls = 0

    def _stat(self, name):
        self.calls += 1
        if self.kinds:
            raise RuntimeError(self.kinds.pop(0))
        return 7

    def _classify(self, exc):
        return None if str(exc) == "bug" else str(exc)

    _get = _put = _remove = _sign = _public = None


def test_retry_policy():
    client = FlakyClient([base.TRANSIENT, base.TRANSIENT])
    assert client.size("a") == 7 and client.calls == 3
    for kind, error in ((base.DENIED, base.StorageAccessError), (base.PERMANENT, base.StorageAccessError),
                        (base.NO_BUCKET, base.StorageAccessError), (base.MISSING, UserError),
                        ("bug", RuntimeError)):
        client = FlakyClient([kind, kind])
        with pytest.raises(error):
            client.size("a")
        assert client.calls == 1  # fails fast
    client = FlakyClient([base.TRANSIENT] * 1000, STORAGE_RETRY_TIMEOUT=0.2)
    with pytest.raises(TransientError, match="'a'"):
        client.size("a")
    assert client.calls > 1


def test_job_deadline_shortens_the_retry_budget():
    assert FlakyClient([base.TRANSIENT] * 20).size("a") == 7  # within STORAGE_RETRY_TIMEOUT
    client = FlakyClient([base.TRANSIENT] * 20)
    with pytest.raises(TransientError):
        client.size("a", deadline=0.0)  # the job has no time left: one attempt, no retries
    assert client.calls == 1


def test_client_is_cached_per_process(tmp_path):
    settings = Settings.from_env({})
    url = f"file://{tmp_path}/bucket"
    client = storage.get_client(url, settings)
    assert storage.get_client(url, Settings.from_env({})) is client
    assert storage.get_client(url, settings.replace(MAX_INPUT_BYTES=5)) is not client
    odd = settings.replace(ALLOWED_INPUT_PREFIXES=["a/"])  # unhashable override still works
    assert storage.get_client(url, odd) is storage.get_client(url, odd)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must build its own client
        os.write(write, b"1" if storage.get_client(url, settings) is not client else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"


def test_importing_storage_imports_no_cloud_sdk(tmp_path):
    code = (
        "import sys\n"
        "import redis_consumer.storage as s\n"
        "from redis_consumer.settings import Settings\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'\n"
        "assert not any(m.startswith('google') for m in sys.modules), 'google imported'\n"
        f"s.get_client('file://{tmp_path}/b', Settings.from_env({{}}))\n"
        "assert 'boto3' not in sys.modules and not any(m.startswith('google') for m in sys.modules)\n"
        "s.get_client('s3://bucket', Settings.from_env({}, AWS_ACCESS_KEY_ID='x', AWS_SECRET_ACCESS_KEY='y'))\n"
        "assert 'botocore' in sys.modules and not any(m.startswith('google.cloud') for m in sys.modules)\n"
        "assert 'boto3' not in sys.modules, 'boto3 imported for an s3 bucket (botocore is enough)'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STORAGE_"))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def _s3_error(code, status):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("code, status, kind", [
    ("NoSuchKey", 404, base.MISSING), ("404", 404, base.MISSING), ("NoSuchBucket", 404, base.NO_BUCKET),
    ("AccessDenied", 403, base.DENIED), ("InvalidAccessKeyId", 403, base.DENIED),
    ("SlowDown", 503, base.TRANSIENT), ("InternalError", 500, base.TRANSIENT), ("Throttling", 400, base.TRANSIENT),
    ("InvalidRange", 416, base.PERMANENT),
])
def test_s3_error_classification(code, status, kind):
    from boto3.exceptions import S3UploadFailedError

    from redis_consumer.storage.s3 import S3Client

    client = S3Client("s3://bucket", "bucket", "", Settings.from_env({}, AWS_ACCESS_KEY_ID="a",
                                                                     AWS_SECRET_ACCESS_KEY="b"))
    err = _s3_error(code, status)
    assert client._classify(err) == kind
    try:  # boto3 wraps upload errors like this; the classification follows __context__
        try:
            raise err
        except type(err):
            raise S3UploadFailedError("Failed to upload") from None
    except S3UploadFailedError as wrapped:
        assert client._classify(wrapped) == kind
    assert code in client._describe(err) and str(status) in client._describe(err)


def test_s3_network_errors_are_transient_and_bugs_are_not_classified():
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    from redis_consumer.storage.s3 import S3Client

    client = S3Client("s3://bucket", "bucket", "", Settings.from_env({}, AWS_ACCESS_KEY_ID="a",
                                                                     AWS_SECRET_ACCESS_KEY="b"))
    for err in (EndpointConnectionError(endpoint_url="http://x"), ConnectionClosedError(endpoint_url="http://x"),
                ReadTimeoutError(endpoint_url="http://x")):
        assert client._classify(err) == base.TRANSIENT
    assert client._classify(KeyError("bug")) is None


def test_gcs_error_classification():
    import requests
    from google.api_core import exceptions as gexc

    from redis_consumer.storage.gcs import GCSClient

    client = GCSClient("gs://bucket", "bucket", "", Settings.from_env({}, STORAGE_EMULATOR_HOST="127.0.0.1:1"))
    cases = [(gexc.NotFound("x"), base.MISSING), (gexc.Forbidden("x"), base.DENIED),
             (gexc.Unauthorized("x"), base.DENIED), (gexc.TooManyRequests("x"), base.TRANSIENT),
             (gexc.ServiceUnavailable("x"), base.TRANSIENT), (gexc.InternalServerError("x"), base.TRANSIENT),
             (gexc.PreconditionFailed("x"), base.TRANSIENT), (gexc.BadRequest("x"), base.PERMANENT),
             (requests.exceptions.ConnectionError("reset"), base.TRANSIENT), (ValueError("bug"), None)]
    for err, kind in cases:
        assert client._classify(err) == kind, err


def test_gcs_without_any_credentials_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata-server probe
    monkeypatch.setenv("CLOUDSDK_CONFIG", "/nonexistent")  # no gcloud user credentials
    monkeypatch.setenv("HOME", "/nonexistent")
    with pytest.raises(base.StorageAccessError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        storage.get_client("gs://some-bucket-nocreds", Settings.from_env({}))
