"""Helpers for the CLI tests: run the CLI in-process, and a bucket client for `file://` folders."""

from __future__ import annotations

import shutil
from pathlib import Path

from redis_consumer.cli.main import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `redis-consumer argv...` in this process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


class DirBucket:
    """Stand-in for the `file://` storage client while `redis_consumer.storage` is not installed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri()

    def upload(self, path: str, key: str) -> tuple[str, str]:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return key, target.as_uri()

    def download(self, key: str, dest_dir: str) -> str:
        target = Path(dest_dir) / Path(key).name
        shutil.copyfile(self.root / key, target)
        return str(target)

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()


def bucket_for(root: Path):
    """The real storage client for `file://root` when storage is available, else `DirBucket`."""
    try:
        from redis_consumer.storage import get_client
    except ImportError:
        return DirBucket(root)
    return get_client(Path(root).as_uri())
