"""Shared life cycle of the test servers that run as subprocesses (moto S3, the GCS emulator)."""

from __future__ import annotations

import signal
import subprocess


class SubprocessServer:
    """Subclasses set `self.proc` in `start()` and clean their own files in `remove_files()`."""

    proc: subprocess.Popen | None = None

    def start(self) -> SubprocessServer:
        raise NotImplementedError

    def remove_files(self) -> None:
        """Delete the server's scratch files (logs, data)."""

    def stop(self) -> None:
        """SIGKILL, as a crash or an abrupt network loss would look to clients."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        self.remove_files()
