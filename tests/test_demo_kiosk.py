"""The demo's polaris and caliban jobs: both done, their zips valid, their pictures in the montage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from redis_consumer.demo.kiosk_jobs import add_to_montage
from tests.test_demo import run_demo


@pytest.mark.slow
def test_demo_runs_a_polaris_and_a_caliban_job(tmp_path):
    from PIL import Image

    out = tmp_path / "demo-output"
    proc = run_demo(out, "--images", "1", "--zip-images", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    kiosk = summary["kiosk_jobs"]
    assert kiosk["polaris"]["status"] == "done" and kiosk["polaris"]["valid_zip"] and kiosk["polaris"]["spot_count"] > 20
    assert kiosk["caliban"]["status"] == "done" and kiosk["caliban"]["valid_zip"]
    assert kiosk["caliban"]["track_count"] == 11 and kiosk["caliban"]["division_count"] == 1  # 9 nuclei + 2 daughters
    assert "polaris: done" in proc.stdout and "caliban: done" in proc.stdout
    with Image.open(out / "montage.png") as im:
        assert im.size[1] > 256 + 160  # the segmentation row plus the spots / tracks row
    assert len(list((out / "results" / "kiosk").glob("*.zip"))) == 2
    # --no-kiosk-jobs leaves them out
    proc = run_demo(out, "--images", "1", "--zip-images", "0", "--no-kiosk-jobs", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kiosk_jobs" not in json.loads(proc.stdout)


def test_pictures_are_appended_as_a_row(tmp_path):
    from PIL import Image

    path = tmp_path / "m.png"
    Image.new("RGB", (300, 100), (1, 2, 3)).save(path)
    panels = [np.full((50, 80, 3), 200, np.uint8), np.full((70, 40, 3), 100, np.uint8)]
    add_to_montage(path, panels)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (100 + 70 + 8, 300, 3)
    assert (sheet[:100, :300] == (1, 2, 3)).all()
    assert (sheet[104:154, 4:84] == 200).all() and (sheet[104:174, 88:128] == 100).all()  # top-aligned row
    assert (sheet[154:174, 4:84] == 20).all()
