"""`input_file_name` as the full https URL of an object in our bucket (kiosk frontends, kiosk-protocol §1.6, §1.8)."""

from __future__ import annotations

import pytest

from redis_consumer.errors import UserError
from redis_consumer.storage.keys import confine


@pytest.mark.parametrize("url,key", [
    # S3 virtual-hosted: multer-s3's `location` (kiosk-frontend upload.controller.js:60-71)
    ("https://my-bucket.s3.amazonaws.com/uploads/cells.tif", "uploads/cells.tif"),
    ("https://my-bucket.s3.us-west-2.amazonaws.com/uploads/cells.tif", "uploads/cells.tif"),
    ("https://my-bucket.s3-us-west-2.amazonaws.com/uploads/cells.tif", "uploads/cells.tif"),
    ("https://my-bucket.s3.dualstack.eu-west-1.amazonaws.com/uploads/cells.tif", "uploads/cells.tif"),
    ("HTTPS://MY-BUCKET.S3.AMAZONAWS.COM/uploads/cells.tif", "uploads/cells.tif"),
    ("https://my-bucket.s3.amazonaws.com/uploads/my%20cells%2B1.tif", "uploads/my cells+1.tif"),
    # S3 path style (what the kiosk's own consumer writes as output_url, KRC storage.py:342-351)
    ("https://s3.amazonaws.com/my-bucket/uploads/cells.tif", "uploads/cells.tif"),
    ("https://s3.us-east-2.amazonaws.com/my-bucket/uploads/cells.tif", "uploads/cells.tif"),
    ("https://s3-eu-west-1.amazonaws.com/my-bucket/uploads/a/b.tif", "uploads/a/b.tif"),
    # kiosk-client's join + normalise of the S3 location (kiosk-client job.py:400-410)
    ("uploads/../https:/my-bucket.s3.amazonaws.com/uploads/cells.tif", "uploads/cells.tif"),
    ("../https:/my-bucket.s3.amazonaws.com/uploads/cells.tif", "uploads/cells.tif"),
    ("a/b/../https:/s3.amazonaws.com/my-bucket/uploads/cells.tif", "uploads/cells.tif"),
])
def test_s3_https_forms_resolve_to_the_key(url, key):
    assert confine(url, "s3", "my-bucket") == key


def test_dotted_bucket_and_prefix():
    assert confine("https://my.bucket.s3.amazonaws.com/p/uploads/x.png", "s3", "my.bucket", "p") == "uploads/x.png"
    with pytest.raises(UserError, match="outside this worker's bucket prefix"):
        confine("https://my.bucket.s3.amazonaws.com/q/uploads/x.png", "s3", "my.bucket", "p")


@pytest.mark.parametrize("url,key", [
    ("https://storage.googleapis.com/deepcell-output/uploads/5d41402abc4b2a76b9719d911017c592.tif",
     "uploads/5d41402abc4b2a76b9719d911017c592.tif"),
    ("https://storage.googleapis.com/deepcell-output/uploads/my%20cells%3A1.png", "uploads/my cells:1.png"),
    ("https://deepcell-output.storage.googleapis.com/uploads/a.tif", "uploads/a.tif"),
    ("https://storage.cloud.google.com/deepcell-output/uploads/a.tif", "uploads/a.tif"),
])
def test_gcs_https_forms_resolve_to_the_key(url, key):
    assert confine(url, "gs", "deepcell-output") == key


@pytest.mark.parametrize("url,scheme,bucket", [
    ("https://other-bucket.s3.amazonaws.com/uploads/cells.tif", "s3", "my-bucket"),
    ("https://s3.amazonaws.com/other-bucket/uploads/cells.tif", "s3", "my-bucket"),
    ("https://my-bucket.s3.amazonaws.com.evil.example/uploads/cells.tif", "s3", "my-bucket"),
    ("https://evil.example/my-bucket/uploads/cells.tif", "s3", "my-bucket"),
    ("https://my-bucket.evil.example/uploads/cells.tif", "s3", "my-bucket"),
    ("https://user:pw@my-bucket.s3.amazonaws.com/uploads/cells.tif", "s3", "my-bucket"),
    ("https://my-bucket.s3.amazonaws.com:8443/uploads/cells.tif", "s3", "my-bucket"),
    ("https://storage.googleapis.com/my-bucket/uploads/cells.tif", "s3", "my-bucket"),  # GCS host, S3 worker
    ("https://my-bucket.s3.amazonaws.com/uploads/cells.tif", "gs", "my-bucket"),  # S3 host, GCS worker
    ("https://storage.googleapis.com/other/uploads/cells.tif", "gs", "my-bucket"),
    ("uploads/../https:/other.s3.amazonaws.com/uploads/cells.tif", "s3", "my-bucket"),
    ("https://storage.googleapis.com/x/a.tif", "file", "/data/bucket"),
])
def test_other_hosts_and_buckets_are_refused(url, scheme, bucket):
    with pytest.raises(UserError, match="outside this worker's bucket"):
        confine(url, scheme, bucket)


@pytest.mark.parametrize("url,match", [
    ("https://my-bucket.s3.amazonaws.com/uploads/../../etc/passwd", r"'\.' or '\.\.' segments"),
    ("https://my-bucket.s3.amazonaws.com/uploads/%2E%2E/secret", r"'\.' or '\.\.' segments"),
    ("https://my-bucket.s3.amazonaws.com/uploads/a.tif?X-Amz-Signature=abc", "query or fragment"),
    ("https://my-bucket.s3.amazonaws.com/", "empty"),
    ("https://my-bucket.s3.amazonaws.com/uploads/a%00.tif", "control character"),
])
def test_https_keys_are_still_confined(url, match):
    with pytest.raises(UserError, match=match):
        confine(url, "s3", "my-bucket")
