"""The CI variant of the chaos soak (~60 s): bench/chaos.py --quick must lose nothing.

It runs the real harness in a subprocess (Redis primary + replica + Sentinel with append-only
files, moto S3 behind a proxy, the dev model server when present, three workers) and checks the
JSON it prints: every job final, none lost or stuck, no result written twice, every disruption
recovered, SIGTERMed workers exiting 0 and no traceback in any worker log.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_chaos_quick_loses_nothing():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=380, check=False)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    summary = json.dumps({k: v for k, v in report.items() if k != "events"})
    assert report["lost"] == 0, summary
    assert report["stuck"] == 0, summary
    assert report["duplicate_results"] == 0, summary
    assert report["bad_outputs"] == 0, summary
    assert report["left_in_queues"] == 0, summary
    assert report["done"] + report["failed"] == report["jobs"], summary
    assert report["failed"] == 0, summary  # every input is good here: nothing may fail
    assert report["kills"] >= 2 and report["sigterms"] >= 1, summary
    assert report["redis_restarts"] == 1 and report["failovers"] == 1 and report["s3_outages"] == 1, summary
    assert report["unrecovered_events"] == 0, json.dumps(report["events"])
    assert all(code == 0 for code in report["sigterm_exit_codes"]), summary
    assert report["tracebacks_in_logs"] == 0, summary
    assert proc.returncode == 0
