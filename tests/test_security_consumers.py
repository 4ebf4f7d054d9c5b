"""Consumers used by the security tests (`CONSUMER_TYPE=tests.test_security_consumers:Name`).

They do what careless real code might do — log signed URLs, put credentials in exception
messages — so the tests can prove the redaction layer keeps those values out of every log line.
"""

from __future__ import annotations

import logging
import os

from redis_consumer.consumers.base import Consumer

log = logging.getLogger("tests.leaky")


def signed_url() -> str:
    """A presigned-looking S3 URL whose signature is a planted secret."""
    sig = os.environ.get("PLANTED_SIGNATURE", "SigPlanted")
    return (
        "https://bucket.s3.amazonaws.com/output/result.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AKIAPLANTED%2F20260101&X-Amz-Expires=604800&X-Amz-Signature={sig}"
    )


class LeakyConsumer(Consumer):
    """Logs a signed URL every way a consumer can; with `boom` set, raises with a password inside."""

    name = "leaky"

    def _consume(self, redis_hash: str):
        url = signed_url()
        log.info("uploaded result to %s", url)
        log.debug("debug view of the url: %r", {"url": url})
        self.log_job(f"result uploaded to {url}")
        if self.job.fields.get("boom"):
            password = os.environ.get("PLANTED_PASSWORD", "")
            raise RuntimeError(f"could not reach redis://user:{password}@db:6379 with key {os.environ.get('AWS_SECRET_ACCESS_KEY')}")
        return {"output_url": url, "output_file_name": "output/result.zip"}
