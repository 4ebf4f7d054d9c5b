"""The custom-consumer story: install examples/classify (no edits to this repo) and run a job.

The example is installed with pip into a private target directory (the shared venv is left
alone). Its own tests use the plug-in kit (`redis_consumer.testing.run_job`), as a plug-in
author would; then a real worker process with that directory on PYTHONPATH finds `classify`
through the `redis_consumer.consumers` entry point and classifies a PNG through the dev model server.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from redis_consumer.utils.timestamps import now_iso
from tests.helpers.model_server import ModelServer
from tests.helpers.net import wait_until
from tests.helpers.redis_server import env_for
from tests.helpers.workers import start_worker, stop_all

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("classify-site")
    source = tmp_path_factory.mktemp("classify-src") / "classify"
    shutil.copytree(ROOT / "examples" / "classify", source)  # pip leaves build files next to the source
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=180,
    )
    return target


def test_entry_point_registers_the_consumer_type(installed):
    code = ("from redis_consumer.consumers import registry; "
            "print(registry.available()); print(registry.load('classify').__name__)")
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": f"{installed}:{ROOT}"},
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert "'classify'" in out and "ClassifyConsumer" in out


def _sky_png() -> bytes:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 40, 90, 220  # mostly blue
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def classify_cls(installed):
    sys.path.insert(0, str(installed))
    try:
        from redis_consumer_classify.consumer import ClassifyConsumer
    finally:
        sys.path.remove(str(installed))
    return ClassifyConsumer


def test_kit_runs_classify_with_the_dev_model_server(classify_cls):
    """The plug-in kit: one job in-process (fakeredis, temporary bucket, dev model server over gRPC)."""
    from redis_consumer.testing import run_job

    run = run_job(classify_cls, {"top_k": "2"}, inputs={"sky.png": _sky_png()}, model_server=True)
    assert run.status == "done", run.hash
    assert run.hash["top_label"] == "blue" and run.hash["top_labels"].split(",")[1].startswith("green:")
    assert [t["label"] for t in json.loads(run.files["results.json"])["top_k"][0]] == ["blue", "green"]
    assert run.files["predictions.csv"].decode().splitlines()[1].startswith("0,1,blue,")
    assert any("top label blue" in line for line in run.log)
    assert "top label blue" in run.files["log.txt"].decode()


def test_kit_reports_bad_input_as_a_user_failure(classify_cls):
    from redis_consumer.testing import LocalTF, run_job

    run = run_job(classify_cls, {"top_k": "many"}, inputs={"sky.png": _sky_png()}, tf=LocalTF())
    assert (run.status, run.outcome, run.hash["failure_type"]) == ("failed", "failed", "user")
    assert run.hash["reason"] == "The job's top_k field must be a whole number, got 'many'."
    assert run.files == {}


def test_classify_job_end_to_end(installed, rds, redis_server, tmp_path):
    server = ModelServer().start()
    procs = []
    try:
        bucket = tmp_path / "bucket"
        (bucket / "uploads").mkdir(parents=True)
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[..., 0], rgb[..., 1], rgb[..., 2] = 40, 90, 220  # mostly blue
        Image.fromarray(rgb).save(bucket / "uploads" / "sky.png")
        key = f"classify:sky.png:{uuid.uuid4().hex}"
        rds.hset(key, mapping={"status": "new", "input_file_name": "uploads/sky.png", "original_name": "sky.png",
                               "created_at": now_iso(), "top_k": "2"})
        rds.lpush("classify", key)
        env = env_for(redis_server, QUEUE="classify", CONSUMER_TYPE="classify", TF_PORT=str(server.port),
                      STORAGE_BUCKET=f"file://{bucket}", OUTPUT_URL_MODE="key", EMPTY_QUEUE_TIMEOUT="0.5",
                      PYTHONPATH=str(installed))
        procs.append(start_worker(env, str(tmp_path / "worker.log")))
        wait_until(lambda: rds.hget(key, "status") in ("done", "failed"), timeout=120, message="classify job")
        job = rds.hgetall(key)
        assert job["status"] == "done", (job, (tmp_path / "worker.log").read_text()[-2000:])
        assert job["top_label"] == "blue"
        assert job["top_labels"].startswith("blue:") and job["top_labels"].split(",")[1].startswith("green:")
        zf = zipfile.ZipFile(io.BytesIO((bucket / job["output_file_name"]).read_bytes()))
        summary = json.loads(zf.read("results.json"))
        assert [t["label"] for t in summary["top_k"][0]] == ["blue", "green"]
        assert summary["model"] == {"name": "Identity", "version": "1"}
        assert "predictions.csv" in zf.namelist() and "log.txt" in zf.namelist()
    finally:
        stop_all(procs)
        server.stop()


def _run_cli(installed, args, **env):
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{installed}:{ROOT}", "ALLOW_ROOT": "true",
            "METRICS_PORT": "0", "QUEUE": "classify", "CONSUMER_TYPE": "classify", **env}
    return subprocess.run([sys.executable, "-m", "redis_consumer.cli.main", *args], env=base,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("env,message", [
    ({"CLASSIFY_TOP_K": "lots"}, "CLASSIFY_TOP_K must be a whole number, got 'lots'"),
    ({"CLASSIFY_TOP_K": "0"}, "CLASSIFY_TOP_K must be at least 1"),
    ({"CLASSIFY_LABELS": "/nonexistent/labels.txt"}, "CLASSIFY_LABELS must be the path of a labels file"),
    ({"CLASSIFY_MODEL": "Identity"}, "CLASSIFY_MODEL must be a model NAME:VERSION"),
])
def test_a_bad_plugin_setting_stops_the_worker_with_one_line(installed, redis_server, env, message):
    """The plug-in's own settings are validated at worker start: exit 2, one line naming the variable."""
    proc = _run_cli(installed, ["consume"], REDIS_URL=redis_server.url, **env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_config_lists_the_plugin_settings_and_the_readme_documents_them(installed):
    from redis_consumer.settings_base import specs_of

    proc = _run_cli(installed, ["config", "--json"], CLASSIFY_TOP_K="3")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["CLASSIFY_TOP_K"] == 3 and shown["CLASSIFY_MODEL"] == "Identity:1" and shown["QUEUE"] == "classify"
    sys.path.insert(0, str(installed))
    try:
        from redis_consumer_classify.consumer import ClassifyConsumer
    finally:
        sys.path.remove(str(installed))
    readme = (ROOT / "examples" / "classify" / "README.md").read_text(encoding="utf-8")
    for spec in specs_of(ClassifyConsumer.settings_spec):
        assert spec.row() in readme, f"examples/classify/README.md lacks the row of {spec.name}"
