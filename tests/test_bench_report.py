"""bench/report.py and bench/headlines.py: every headline names a figure its benchmark really prints.

Running each benchmark to read its keys takes minutes, so the check is static: every part of
every dotted path a headline row uses (figure, baseline, and the `{path}` placeholders of its
text) must be spelled in its benchmark's source, as a string literal, an f-string pattern
(`f"{mb}MB"` covers `16MB`) or a keyword name (`dict(key=...)`). A benchmark that renames or drops
a key makes this fail instead of turning the row into "n/a". The rendering tests use a small
results document with the same shape run_all.py writes.
"""

from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
sys.path.insert(0, str(BENCH))
try:
    import report
    import run_all
    from headlines import HEADLINES, Row
finally:
    sys.path.remove(str(BENCH))


def script_for(bench: str) -> Path:
    return {run_all.bench_name(p): p for p in run_all.discover()}[bench]


@cache
def spellings(path: Path) -> tuple[frozenset[str], tuple[re.Pattern, ...]]:
    """String literals and keyword names in a benchmark's source (plus the bench modules it imports),
    and its f-strings as patterns."""
    literals: set[str] = set()
    patterns: list[re.Pattern] = []
    files = [path]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else [a.name for a in node.names]
            files += [BENCH / f"{n}.py" for n in names if n and (BENCH / f"{n}.py").exists()]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.keyword) and node.arg:
                literals.add(node.arg)
            elif isinstance(node, ast.JoinedStr):
                parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in node.values]
                patterns.append(re.compile("".join(parts)))
    return frozenset(literals), tuple(patterns)


def spelled(part: str, path: Path) -> bool:
    literals, patterns = spellings(path)
    return part.isdigit() or part in literals or any(p.fullmatch(part) for p in patterns)


def row_paths(row: Row) -> list[str]:
    texts = (row.what, row.baseline_is, row.target)
    return [p for p in (row.figure, row.baseline) if p] + [p for t in texts for p in report.placeholders(t)]


@pytest.mark.parametrize("row", HEADLINES, ids=lambda r: r.what[:60])
def test_every_headline_path_is_a_key_its_benchmark_prints(row):
    script = script_for(row.bench)  # KeyError: no bench/bench_<name>.py is discovered for this row
    missing = [(path, part) for path in row_paths(row) for part in path.split(".") if not spelled(part, script)]
    assert not missing, f"{script.name} spells none of these keys any more: {missing}"


def test_the_static_check_catches_a_renamed_key():
    codec = script_for("codec")
    assert spelled("ours_ms", codec) and spelled("16MB", codec)
    assert not spelled("ours_millis", codec) and not spelled("16GB", codec)


def test_every_discovered_benchmark_has_headline_rows():
    discovered = {run_all.bench_name(p) for p in run_all.discover()}
    assert {"liveness", "deepcell", "spots", "tracking", "fuzz", "peers", "chaos"} <= discovered
    assert discovered == {row.bench for row in HEADLINES}


def test_a_baseline_is_never_a_target():
    for row in HEADLINES:
        assert row.baseline is None or "target" not in row.baseline, row
        assert "target" not in row.baseline_is.lower(), row


def doc(**results) -> dict:
    return {"generated_at": "2026-12-01T00:00:00Z", "mode": "full", "machine": {"cpus": 2},
            "results": {name: {"ok": True, "mode": "full", "seconds": 1.0, "data": data}
                        for name, data in results.items()}}


def headline(markdown: str, start: str) -> list[str]:
    line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {start}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_rows_quote_this_runs_settings_and_targets():
    md = report.render_markdown(doc(
        storage={"size_mb": 64, "storage_download_mb_s": 200.0, "plain_http_get_mb_s": 400.0, "rss_limit_mb": 64},
        codec={"by_size": {"16MB": {"ours_ms": 3.0, "warm_memcpy_ms": 2.0}}, "target_ours_vs_warm_memcpy": 1.5}))
    assert headline(md, "S3 download throughput")[:5] == ["S3 download throughput, 64 MB object", "200", "400",
                                                         "0.5x", ""]
    assert headline(md, "Codec encode+decode vs a warm memcpy, 16 MB")[1:5] == ["3.00", "2.00", "1.5x",
                                                                             "<= 1.5x baseline"]
    assert headline(md, "Codec encode+decode vs a warm memcpy, 64 MB")[1:3] == ["n/a", "n/a"]


def test_lists_of_objects_reach_the_full_table():
    md = report.render_markdown(doc(fuzz={"cases": 10, "phases": [{"cases": 6}, {"cases": 4}]}))
    assert "| `phases.1.cases` | 4 |" in md
    assert report.get({"phases": [{"cases": 6}]}, "phases.0.cases") == 6
    assert report.get({"phases": [{"cases": 6}]}, "phases.1.cases") is None


def test_runs_table_says_which_figures_are_from_another_mode():
    d = doc(demo={"images_per_second": 3.0})
    d["results"]["codec"] = {"ok": True, "seconds": 2.0, "data": {"quick": True}}
    md = report.render_markdown(d)
    assert "| codec | quick |" in md and "| demo | full |" in md
    assert "kept from earlier runs" in md
    assert "kept from earlier runs" not in report.render_markdown(doc(demo={"images_per_second": 3.0}))


def test_capacity_model_uses_the_deepcell_segmentation_job_and_says_so():
    d = doc(redis_capacity={"segmentation": {"jobs_per_second_per_redis": 2000.0}},
            consumer_cpu={"cpu_ms_per_image_median": 45.0,
                          "deepcell": {"segmentation": {"cpu_ms_per_mp_median": 100.0}}},
            gpu={"busy_256_float32": 0.5, "best_malloc": "default"})
    md = report.render_markdown(d)
    assert "consumer CPU 105 ms per 1024x1024 image of a segmentation job on the DeepCell path" in md
    assert "| Images/s one consumer core feeds | 9.5 |" in md
    assert "GPU busy fraction 0.5:" in md
    del d["results"]["gpu"]
    assert "GPU busy fraction assumed 0.9 (no gpu figure in this run)" in report.render_markdown(d)


def test_stage_table_puts_each_stage_beside_its_floor():
    stage = {"cpu_ms_per_mp": 4.0, "floor": "memcpy_image", "floor_ms_per_mp": 0.5, "x_floor": 8.0}
    kind = {"stage_vs_floor": {"pre": stage}, "cpu_ms_per_mp_outside_watershed": 20.0,
            "target_outside_watershed_ms_per_mp": 25.0}
    md = report.render_markdown(doc(consumer_cpu={"deepcell": {"segmentation": kind, "mesmer": kind}}))
    assert "| pre | memcpy_image | 4.00 | 0.5 | 8.00 | 4.00 | 0.5 | 8.00 |" in md
    assert "| **all but the deep watershed** | target <= 25 | **20.00** |  |  | **20.00** |  |  |" in md


def test_a_benchmark_past_its_timeout_is_stopped_with_everything_it_started(tmp_path):
    """run_all bounds each benchmark: at the timeout its whole process group goes, children included."""
    import time

    pidfile = tmp_path / "child.pid"
    script = tmp_path / "bench_hang.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "print('{\"partial\": 1}', flush=True)\n"
        "time.sleep(600)\n")
    start = time.monotonic()
    entry = run_all.run_one(script, quick=True, timeout=3)
    assert time.monotonic() - start < 3 + run_all.GRACE_S
    assert entry["exit_code"] is not None and entry["exit_code"] < 0  # killed by a signal
    assert entry["timed_out"] and entry["mode"] == "quick" and entry["data"] == {"partial": 1}
    stat = Path(f"/proc/{int(pidfile.read_text())}/stat")
    for _ in range(50):  # gone, or a zombie waiting for whoever adopted it to reap it
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the benchmark's child ({stat}) outlived the timeout")
