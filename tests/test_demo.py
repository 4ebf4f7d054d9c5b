"""`redis-consumer demo` end to end (a short variant), its fakeredis fallback, Ctrl-C cleanup, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest

from redis_consumer.demo import report
from redis_consumer.demo.images import nuclei_image, write_images, write_zip

ROOT = Path(__file__).resolve().parents[1]


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "TF_", "STORAGE_", "QUEUE", "CONSUMER_TYPE"))}
    env.update(extra)
    return env


def run_demo(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "redis_consumer.cli.main", "demo", "--out", str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or demo_env(), cwd=ROOT, timeout=240,
                          check=False)


def assert_outputs(out: Path, images: int, zipped: int, mesmer: int = 4) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["image_jobs"] == images + zipped + mesmer and summary["zip_jobs"] == (1 if zipped else 0)
    assert summary["mesmer_jobs"] == mesmer
    assert summary["done"] == summary["jobs"] == summary["valid_zips"] and summary["failed"] == 0
    assert summary["latency_p50_seconds"] <= summary["latency_p95_seconds"]
    assert summary["objects_found"] > 0
    assert set(summary["mean_stage_seconds"]) >= {"download", "predict", "postprocess", "upload", "total"}
    zips = sorted((out / "results").glob("*.zip"))
    assert len(zips) == summary["jobs"]
    for path in zips:
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
    from PIL import Image

    with Image.open(out / "montage.png") as im:
        assert im.format == "PNG" and im.size[0] > 0
    return summary


@pytest.mark.slow
def test_demo_runs_to_completion(tmp_path):
    out = tmp_path / "demo-output"
    proc = run_demo(out, "--images", "4", "--zip-images", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo OK" in proc.stderr and "private redis-server" in proc.stderr
    assert "jobs done / failed" in proc.stdout and "job latency p50 / p95" in proc.stdout
    assert_outputs(out, 4, 2)
    # a second run in the same folder starts clean
    proc = run_demo(out, "--images", "2", "--zip-images", "0", "--mesmer-images", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["jobs"] == 3
    assert_outputs(out, 2, 0, mesmer=1)


@pytest.mark.slow
def test_demo_falls_back_to_fakeredis_without_redis_server(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "demo-output"
    proc = run_demo(out, "--images", "2", "--zip-images", "2", env=demo_env(PATH=str(empty_bin)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fakeredis" in proc.stderr
    assert_outputs(out, 2, 2)


@pytest.mark.slow
def test_demo_uses_redis_url_and_stops_everything_on_ctrl_c(tmp_path, redis_server):
    """REDIS_URL points the demo at an existing Redis; SIGINT mid-run stops every child it started."""
    out = tmp_path / "demo-output"
    cmd = [sys.executable, "-m", "redis_consumer.cli.main", "demo", "--out", str(out), "--images", "100",
           "--zip-images", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=demo_env(REDIS_URL=redis_server.url))
    try:
        children: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            children = psutil.Process(proc.pid).children(recursive=True)
            if len(children) >= 2 and (out / "logs" / "worker-segmentation.log").exists():
                break
            time.sleep(0.1)
        assert len(children) >= 2, "demo did not start its model server and worker"
        assert not any("redis-server" in " ".join(c.cmdline()) for c in children)  # REDIS_URL was used
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
        assert "Traceback" not in err
        _gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_rejects_bad_arguments(capsys, tmp_path):
    from redis_consumer.cli.main import main

    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert "not made by the demo" in capsys.readouterr().err

    assert main(["demo", "--images", "0", "--zip-images", "0", "--mesmer-images", "0"]) == 2
    assert main(["demo", "--size", "5"]) == 2
    assert main(["demo", "--model", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.count("redis-consumer: ") == 3 and "Traceback" not in err


def test_synthetic_images_are_deterministic(tmp_path):
    a = write_images(tmp_path / "a", 2, seed=3, size=64)
    b = write_images(tmp_path / "b", 2, seed=3, size=64)
    assert list(a.values()) == list(b.values())
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    image, count = nuclei_image(np.random.default_rng(1), 128, count=5)
    assert image.dtype == np.uint16 and image.shape == (128, 128) and count == 5
    assert image.max() > 4 * np.median(image)  # bright nuclei on a dim background
    archive = write_zip(tmp_path / "x.zip", list(a))
    assert zipfile.ZipFile(archive).namelist() == [f"batch/{p.name}" for p in a]


class _Bucket:
    def __init__(self, root: Path) -> None:
        self.root = root

    def download(self, key: str, dest_dir: str) -> str:
        target = Path(dest_dir) / Path(key).name
        target.write_bytes((self.root / key).read_bytes())
        return str(target)


def test_report_flags_failed_jobs_and_bad_zips(tmp_path):
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.ones((8, 8), np.uint16))
    (tmp_path / "output").mkdir()
    with zipfile.ZipFile(tmp_path / "output" / "good.zip", "w") as zf:
        zf.writestr("a_labels.tif", buf.getvalue())
    with zipfile.ZipFile(tmp_path / "output" / "nolabels.zip", "w") as zf:
        zf.writestr("results.json", "{}")
    (tmp_path / "output" / "broken.zip").write_bytes(b"not a zip")
    stamp = {"created_at": "2026-01-01T00:00:00.000000+00:00", "finished_at": "2026-01-01T00:00:02.000000+00:00"}
    jobs = [
        report.JobRecord("q:a:1", {"status": "done", "output_file_name": "output/good.zip", **stamp}, "image"),
        report.JobRecord("q:b:1", {"status": "done", "output_file_name": "output/nolabels.zip", **stamp}, "image"),
        report.JobRecord("q:c:1", {"status": "done", "output_file_name": "output/broken.zip"}, "image"),
        report.JobRecord("q:d:1", {"status": "failed", "reason": "The image is empty."}, "image"),
    ]
    for job in jobs:
        report.check_zip(job, _Bucket(tmp_path), tmp_path / "dl")
    assert [j.zip_ok for j in jobs] == [True, False, False, False]
    assert jobs[1].zip_problem == "no label image in the zip"
    assert "BadZipFile" in jobs[2].zip_problem
    assert jobs[3].zip_problem == "The image is empty."
    rep = report.Report(jobs, wall_seconds=4.0)
    data = report.summary(rep)
    assert rep.ok is False and data["done"] == 3 and data["failed"] == 1 and data["valid_zips"] == 1
    assert data["latency_p50_seconds"] == pytest.approx(2.0) and data["images_per_second"] == 1.0
    assert "jobs done / failed" in report.render(data)
    png = report.montage([(np.arange(64, dtype=np.uint16).reshape(8, 8), jobs[0].labels)], tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_services_report_a_dead_process_and_kill_a_stubborn_one(tmp_path):
    from redis_consumer.cli.common import CliError
    from redis_consumer.demo.services import Services

    services = Services(tmp_path)
    crashed = services._spawn("crasher", [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"])
    crashed.popen.wait(30)
    with pytest.raises(CliError, match="crasher exited with code 3: boom: bad config"):
        services.check_alive()
    services.stop()
    stubborn = services._spawn("stubborn", [sys.executable, "-c",
                                            ("import signal, time\n"
                                            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                            "print('ready', flush=True)\n"
                                            "time.sleep(120)")])
    deadline = time.monotonic() + 30
    while "ready" not in stubborn.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    services.stop(grace=0.5)
    assert stubborn.popen.returncode == -signal.SIGKILL
    assert services.procs == []


@pytest.mark.slow
def test_children_die_with_a_killed_demo(tmp_path):
    """Even SIGKILL of the demo (no cleanup possible) does not leave its servers and workers running."""
    out = tmp_path / "demo-output"
    cmd = [sys.executable, "-m", "redis_consumer.cli.main", "demo", "--out", str(out), "--images", "100",
           "--zip-images", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=demo_env())
    try:
        children: list[psutil.Process] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            children = psutil.Process(proc.pid).children(recursive=True)
            if len(children) >= 3 and (out / "logs" / "worker-segmentation.log").exists():
                break
            time.sleep(0.1)
        assert len(children) >= 3, "demo did not start redis, the model server and a worker"
        proc.kill()
        proc.wait(10)
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
