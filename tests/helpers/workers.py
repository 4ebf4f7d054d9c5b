"""Start worker processes the way Kubernetes would: `python consume_redis_events.py` with env."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(env: dict[str, str], log_path: str | None = None) -> subprocess.Popen:
    """One worker subprocess; output goes to `log_path` (or nowhere)."""
    env = dict(env)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, str(ROOT / "consume_redis_events.py")], env=env, cwd=str(ROOT),
                            stdout=out, stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL)


def stop_all(procs) -> None:
    """SIGKILL whatever still runs and reap it."""
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass


def restart_until(done, env: dict[str, str], log_dir: str, procs: list, timeout: float) -> int:
    """Keep one worker running (a new one each time the last died, as a Deployment would) until
    `done()` is true or `timeout` seconds pass; every process goes into `procs`. Returns how many
    times a worker had to be restarted."""
    import time

    live = start_worker(env, os.path.join(log_dir, "w0.log"))
    procs.append(live)
    restarts, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        if live.poll() is not None:
            restarts += 1
            live = start_worker(env, os.path.join(log_dir, f"w{restarts}.log"))
            procs.append(live)
        time.sleep(0.05)
    return restarts
