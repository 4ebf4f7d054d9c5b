"""Shared fixtures: a real redis-server per test module (fakeredis only in unit tests)."""

from __future__ import annotations

import pytest

from tests.helpers.redis_server import RedisServer


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
