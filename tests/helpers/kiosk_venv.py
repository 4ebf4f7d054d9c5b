"""The real kiosk-client 0.8.4 from PyPI, in its own cached venv (`.venv-kiosk`), to drive its code.

kiosk-client pins treq 20.9.0 and pulls Twisted; keeping it out of the project's venv means its
dependencies never constrain ours. The venv is built once (about 40 s, PyPI needed) and reused;
a lock keeps parallel test processes from building it twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-kiosk"
VERSION = "0.8.4"
DRIVER = Path(__file__).with_name("kiosk_client_download.py")


def python() -> str:
    """The kiosk venv's interpreter, building the venv first when it is missing or incomplete."""
    exe = VENV / "bin" / "python"
    lock_path = Path(tempfile.gettempdir()) / f"rc-venv-kiosk-{hashlib.sha1(str(VENV).encode()).hexdigest()[:8]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(exe):
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
            subprocess.run([str(exe), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            f"kiosk-client=={VERSION}"], check=True, timeout=600)
            if not _ready(exe):
                raise RuntimeError(f"kiosk-client {VERSION} did not install into {VENV}")
    return str(exe)


def _ready(exe: Path) -> bool:
    if not exe.exists():
        return False
    code = "import kiosk_client, treq, importlib.metadata as m; print(m.version('kiosk-client'))"
    probe = subprocess.run([str(exe), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return probe.returncode == 0 and probe.stdout.strip() == VERSION


def download(output_url: str, output_dir: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run kiosk-client's own `Job.download_output` for `output_url` into `output_dir`."""
    return subprocess.run([python(), "-I", str(DRIVER), output_url, output_dir], capture_output=True, text=True,
                          timeout=timeout, cwd=output_dir, check=False)
