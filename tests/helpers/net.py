"""Free ports and waiting for a TCP listener."""

from __future__ import annotations

import socket
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


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
