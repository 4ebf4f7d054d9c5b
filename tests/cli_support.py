"""Helpers for the CLI tests: run the CLI in-process, and a bucket client for a `file://` folder."""

from __future__ import annotations

from pathlib import Path

from redis_consumer.cli.main import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `redis-consumer argv...` in this process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def bucket_for(root: Path):
    """The real storage client for the `file://root` bucket."""
    from redis_consumer.storage import get_client

    return get_client(Path(root).as_uri())
