"""Shared fixtures: a real redis-server per test module (fakeredis only in unit tests)."""

from __future__ import annotations

import pytest

from tests.helpers.gcs_server import GCSServer
from tests.helpers.redis_server import RedisServer
from tests.helpers.s3_server import S3Server
from tests.helpers.workers import stop_all


@pytest.fixture(scope="module")
def redis_server():
    """A private redis-server (append-only) for the module; flushed before each use via `rds`."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def rds(redis_server):
    """A decoded client on a freshly flushed private Redis."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def s3_server():
    """A real S3 HTTP server (moto) with the bucket `test-bucket`."""
    server = S3Server(buckets=("test-bucket",)).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def gcs_server():
    """A real GCS emulator with the bucket `test-bucket`."""
    server = GCSServer(bucket="test-bucket").start()
    yield server
    server.cleanup()


@pytest.fixture
def procs():
    """Worker processes a test starts (append them): SIGKILLed and reaped when it ends."""
    started = []
    yield started
    stop_all(started)
