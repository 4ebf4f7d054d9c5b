"""Every user mistake gives exactly one line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli_support import run_cli
from tests.helpers.net import free_port


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("redis-consumer: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture
def dead_redis(monkeypatch):
    url = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("REDIS_TIMEOUT", "0.5")
    return url


@pytest.fixture
def live(redis_server, rds, tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("STORAGE_BUCKET", (tmp_path / "bucket").as_uri())
    return rds


@pytest.mark.parametrize("argv", [
    ["status", "q:a:1"],
    ["results", "q:a:1", "--out", "OUT"],
    ["watch", "--once"],
    ["logs", "q:a:1"],
    ["dead", "list", "--queue", "q"],
    ["submit", "INPUT", "--queue", "q"],
])
def test_unreachable_redis(dead_redis, tmp_path, capsys, argv):
    (tmp_path / "in.tif").write_bytes(b"x")
    argv = [a.replace("OUT", str(tmp_path / "o")).replace("INPUT", str(tmp_path / "in.tif")) for a in argv]
    code, _out, err = run_cli(capsys, *argv)
    assert code == 2
    assert "cannot reach Redis at redis://127.0.0.1:" in one_line(err)


def test_unknown_queue(live, capsys):
    code, _, err = run_cli(capsys, "watch", "--once", "--queues", "nosuchqueue")
    assert code == 2 and "unknown queue 'nosuchqueue'" in one_line(err)
    code, _, err = run_cli(capsys, "dead", "list", "--queue", "nosuchqueue")
    assert code == 2 and "unknown queue" in one_line(err)


def test_missing_file_and_empty_glob(live, tmp_path, capsys):
    code, _, err = run_cli(capsys, "submit", tmp_path / "nope.tif", "--queue", "q")
    assert code == 2 and "no such file or folder" in one_line(err)
    code, _, err = run_cli(capsys, "submit", str(tmp_path / "*.png"), "--queue", "q")
    assert code == 2 and "no files match" in one_line(err)
    assert live.llen("q") == 0


@pytest.mark.parametrize("url", ["ftp://host/x", "s3://", "not a url"])
def test_bad_bucket_url(live, tmp_path, capsys, url):
    (tmp_path / "in.tif").write_bytes(b"x")
    code, _, err = run_cli(capsys, "submit", tmp_path / "in.tif", "--queue", "q", "--bucket", url)
    assert code == 2 and "bucket URL" in one_line(err)
    assert live.llen("q") == 0


def test_bad_model_field_and_queue(live, tmp_path, capsys):
    (tmp_path / "in.tif").write_bytes(b"x")
    code, _, err = run_cli(capsys, "submit", tmp_path / "in.tif", "--queue", "q", "--model", "Nuclear")
    assert code == 2 and "NAME:VERSION" in one_line(err)
    code, _, err = run_cli(capsys, "submit", tmp_path / "in.tif", "--queue", "q", "--field", "status=done")
    assert code == 2 and "cannot set 'status'" in one_line(err)
    code, _, err = run_cli(capsys, "submit", tmp_path / "in.tif", "--queue", "q-zip")
    assert code == 2 and "--queue" in one_line(err)


def test_bad_setting_and_bad_redis_url(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_TIMEOUT", "soon")
    code, _, err = run_cli(capsys, "status", "k")
    assert code == 2 and "REDIS_TIMEOUT" in one_line(err)
    monkeypatch.delenv("REDIS_TIMEOUT")
    code, _, err = run_cli(capsys, "status", "k", "--redis-url", "http://localhost")
    assert code == 2 and "REDIS_URL" in one_line(err)


def test_subprocess_error_has_no_traceback(tmp_path):
    """The installed entry point end to end: unreachable Redis is one line, exit 2."""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_TIMEOUT": "0.5"}
    proc = subprocess.run([sys.executable, "-m", "redis_consumer.cli.main", "status", "q:a:1"],
                          check=False, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    one_line(proc.stderr)


def test_every_subcommand_has_help(capsys):
    import argparse

    from redis_consumer.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0
        assert "usage: redis-consumer " + name in capsys.readouterr().out
