"""Free ports and waiting for a TCP listener."""

from __future__ import annotations

import time

from redis_consumer.testing import free_port, wait_for_port

__all__ = ["free_port", "wait_final", "wait_for_port", "wait_until"]


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.02, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value (test helper only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


def wait_final(client, key: str, timeout: float = 30.0) -> dict:
    """Poll a job hash until its status is `done` or `failed`; its fields then (test helper only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = client.hgetall(key)
        if data.get("status") in ("done", "failed"):
            return data
        time.sleep(0.05)
    raise AssertionError(f"{key} not final after {timeout}s: {client.hgetall(key)}")
