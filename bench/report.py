"""Render bench/results.json as Markdown: headline figures beside their baselines, then every figure.

Kept apart from the runner so the README (or a test) can re-render an existing results.json
without re-running anything: `python bench/report.py [bench/results.json]`. Which figures are
headlines, and how each is named, is bench/headlines.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from headlines import HEADLINES, Row

__all__ = ["HEADLINES", "Row", "readme_section", "render_markdown", "update_readme"]


def get(data: Any, path: str | None) -> Any:
    """Value at a dotted path (`a.b.0.c`: a digit indexes a list), else None."""
    if path is None:
        return None
    cur = data
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        text = ", ".join(fmt(v) for v in value[:8]) + (" …" if len(value) > 8 else "")
        return text or "(none)"
    return str(value).replace("|", "\\|").replace("\n", " ")[:120]


_PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([^{}]*))?\}")


def placeholders(text: str) -> list[str]:
    """The dotted paths a row's text quotes (`{size_mb}`, `{targets_s.file:g}`)."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(text)]


def fill(text: str, data: Any) -> str:
    """`text` with each `{path}` / `{path:spec}` replaced by that figure of `data` ("?" when missing)."""
    def one(match: re.Match) -> str:
        value = get(data, match.group(1))
        if value is None:
            return "?"
        if match.group(2) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, match.group(2))
        return fmt(value)
    return _PLACEHOLDER.sub(one, text)


def ratio(figure: Any, baseline: Any) -> str:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (figure, baseline))
    if numbers and baseline and figure:
        r = figure / baseline
        return f"{r:.3g}x" if r >= 0.01 else f"{r:.2g}x"
    return ""


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted path, value) of every leaf; lists of objects are walked with their index as a key."""
    rows: list[tuple[str, Any]] = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        nested = isinstance(value, dict) or (isinstance(value, list) and value and
                                             all(isinstance(v, dict) for v in value))
        rows += flatten(value, f"{prefix}{key}.") if nested else [(f"{prefix}{key}", value)]
    return rows


def bench_data(results: dict, bench: str) -> dict | None:
    entry = results.get(bench) or {}
    return entry.get("data") if entry.get("ok") else None


def headline_lines(results: dict) -> list[str]:
    lines = ["## Headline figures", "",
             "| What | Figure | Same-run baseline | Ratio | Target | Unit | Baseline is |",
             "|---|---|---|---|---|---|---|"]
    for row in HEADLINES:
        data = bench_data(results, row.bench) or {}
        figure, baseline = get(data, row.figure), get(data, row.baseline)
        has_base = row.baseline is not None
        lines.append(f"| {fill(row.what, data)} | {fmt(figure)} | {fmt(baseline) if has_base else '—'} | "
                     f"{ratio(figure, baseline) if has_base else ''} | {fill(row.target, data)} | {row.unit} | "
                     f"{fill(row.baseline_is, data)} |")
    return lines + [""]


def stage_lines(results: dict) -> list[str]:
    """Segmentation and Mesmer job CPU per MP, stage by stage, each beside its same-run floor."""
    deepcell = (bench_data(results, "consumer_cpu") or {}).get("deepcell") or {}
    kinds = [k for k in ("segmentation", "mesmer") if isinstance(deepcell.get(k), dict)]
    if not kinds:
        return []
    stages: list[str] = []
    for kind in kinds:
        stages += [s for s in deepcell[kind].get("stage_vs_floor", {}) if s not in stages]
    lines = ["## Segmentation and Mesmer CPU per stage", "",
             (f"Whole jobs through the worker ({fmt(deepcell.get('image'))}, {fmt(deepcell.get('images'))} jobs "
              f"each, {fmt(deepcell.get('server'))}): CPU ms per megapixel of the worker process, medians, each stage "
              "beside its floor, the cheapest same-run way to do that stage's work once."), "",
             "| Stage | Floor is | " + " | ".join(f"{k} ms/MP | floor | x floor" for k in kinds) + " |",
             "|---|---|" + "---|---|---|" * len(kinds)]
    for stage in stages:
        cells = [deepcell[k].get("stage_vs_floor", {}).get(stage) or {} for k in kinds]
        floor = next((c.get("floor") for c in cells if c.get("floor")), None)
        lines.append(f"| {stage} | {fmt(floor) if floor else '—'} | " + " | ".join(
            f"{fmt(c.get('cpu_ms_per_mp'))} | {fmt(c.get('floor_ms_per_mp'))} | {fmt(c.get('x_floor'))}"
            for c in cells) + " |")
    target = deepcell[kinds[0]].get("target_outside_watershed_ms_per_mp")
    target_text = f"target <= {target:g}" if isinstance(target, (int, float)) else ""
    lines.append(f"| **all but the deep watershed** | {target_text} | " + " | ".join(
        f"**{fmt(deepcell[k].get('cpu_ms_per_mp_outside_watershed'))}** |  | " for k in kinds) + " |")
    return lines + [""]


#: Sizing target of the capacity model: a million images a day, with a peak this many times the mean.
IMAGES_PER_DAY = 1_000_000
PEAK_FACTOR = 4.0
MODEL_MS = (10.0, 50.0, 200.0)  # per-image model (GPU) time examples
IMAGE_MP = 1024 * 1024 / 1e6  # the model sizes 1024x1024 images
ASSUMED_BUSY = 0.9


def consumer_cpu_per_image(results: dict) -> tuple[float | None, str]:
    """CPU ms per 1024x1024 image of a segmentation worker, and what that figure is."""
    cpu = bench_data(results, "consumer_cpu") or {}
    per_mp = get(cpu, "deepcell.segmentation.cpu_ms_per_mp_median")
    if isinstance(per_mp, (int, float)):
        return per_mp * IMAGE_MP, "a segmentation job on the DeepCell path, deep watershed included"
    if isinstance(cpu.get("cpu_ms_per_image_median"), (int, float)):
        return cpu["cpu_ms_per_image_median"], "a threshold-path job (Identity model, no deep watershed: too low)"
    return None, "nothing (not measured in this run)"


def gpu_busy(results: dict) -> tuple[float, str]:
    """Busy fraction one worker keeps a GPU at, and what that figure is."""
    gpu = bench_data(results, "gpu") or {}
    busy = gpu.get("busy_256_float32")  # not `utilisation_pipelined` of older runs: 128x128 at per-tile cost
    if isinstance(busy, (int, float)) and busy > 0:
        return busy, (f"GPU busy fraction {fmt(busy)}: what one worker keeps a per-pixel-cost GPU at with "
                      f"256x256 float32 tiles ({fmt(gpu.get('best_malloc'))} malloc setting)")
    return ASSUMED_BUSY, f"GPU busy fraction assumed {ASSUMED_BUSY:g} (no gpu figure in this run)"


def capacity_lines(results: dict) -> list[str]:
    """The capacity model, computed from this run's figures (docs/capacity.md explains it)."""
    cap = bench_data(results, "redis_capacity") or {}
    seg = cap.get("segmentation") or {}
    jobs_s = seg.get("jobs_per_second_per_redis")
    cpu_ms, cpu_what = consumer_cpu_per_image(results)
    util, util_what = gpu_busy(results)
    mean = IMAGES_PER_DAY / 86400
    peak = mean * PEAK_FACTOR
    intro = (f"Sized for {IMAGES_PER_DAY:,} images a day: {mean:.1f} images/s on average, {peak:.1f}/s at a "
             f"{PEAK_FACTOR:g}x peak. Inputs from this run: Redis commands sent per job "
             f"{fmt(seg.get('commands_per_job'))} (+{fmt(seg.get('commands_inside_lua_per_job'))} inside Lua), "
             f"Redis command time {fmt(seg.get('redis_usec_per_job'))} µs per job, plain Redis command rate "
             f"{fmt(cap.get('plain_command_ops_per_second'))}/s (`redis-benchmark`), consumer CPU "
             f"{fmt(cpu_ms)} ms per 1024x1024 image of {cpu_what}; {util_what}.")
    lines = ["## Capacity model", "", intro, ""]
    if not (jobs_s and cpu_ms):
        return lines + ["(Not computed: the redis_capacity or consumer_cpu benchmark has no figures in this run.)", ""]
    per_core = 1000.0 / cpu_ms
    lines += [
        "| Quantity | Value |", "|---|---|",
        f"| Jobs/s one Redis primary carries | {jobs_s:,.0f} ({jobs_s * 86400 / 1e6:,.0f} million/day) |",
        f"| Redis primary load at the peak | {100 * peak / jobs_s:.2f}% |",
        f"| Images/s one consumer core feeds | {per_core:.1f} |",
        f"| Consumer cores at the peak | {peak / per_core:.1f} |",
        "", "| Model time per image | GPUs at the peak | Consumer cores per GPU |", "|---|---|---|",
    ]
    for ms in MODEL_MS:
        gpus = peak * ms / 1000.0 / util
        cores_per_gpu = (util * 1000.0 / ms) / per_core
        lines.append(f"| {ms:g} ms | {gpus:.1f} | {cores_per_gpu:.2f} |")
    return lines + [""]


def entry_mode(entry: dict) -> str:
    """quick or full: recorded by the runner, else the benchmark's own `quick` flag, else "?" (not recorded)."""
    if entry.get("mode"):
        return entry["mode"]
    quick = (entry.get("data") or {}).get("quick")
    return "?" if quick is None else ("quick" if quick else "full")


def render_markdown(doc: dict) -> str:
    results = doc.get("results", {})
    m = doc.get("machine", {})
    mode = doc.get("mode", "?")
    modes = {entry_mode(r) for r in results.values()}
    mixed = "" if modes <= {mode} else (" Some figures are kept from earlier runs (`--only`) or other modes: "
                                         "the Runs table of bench/results.md gives each benchmark's mode and time.")
    lines = [
        "# Benchmark results",
        "",
        (f"Generated {doc.get('generated_at', '?')} by `make bench` (`bench/run_all.py`, {mode} "
         f"mode) on {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, Redis {m.get('redis', '?')}. "
         "Every baseline was measured in the same run on the same machine; compare ratios, not absolute numbers, "
         f"across machines. Ratio = figure / baseline. Targets are the project's goals (most from issue 17), not "
         f"measurements.{mixed}"),
        "",
    ]
    lines += headline_lines(results) + stage_lines(results) + capacity_lines(results)
    total = sum(r.get("seconds") or 0 for r in results.values())
    lines += ["## Runs", "", f"{len(results)} benchmarks, {total:,.0f} s in all.", "",
              "| Benchmark | Mode | OK | Seconds | Exit code | Finished |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        state = ("yes" if r.get("ok") else "**no**") + (", **timed out**" if r.get("timed_out") else "")
        lines.append(f"| {name} | {entry_mode(r)} | {state} | "
                     f"{fmt(r.get('seconds'))} | {r.get('exit_code')} | {r.get('finished_at', '?')} |")
    for name, r in results.items():
        lines += ["", f"## {name}", "", f"`{r.get('script', '')}`", ""]
        if not r.get("ok"):
            lines += ["Failed:", "", "```", str(r.get("error", ""))[-1500:], "```"]
            continue
        lines += ["| Figure | Value |", "|---|---|"]
        for key, value in flatten(r["data"]):
            lines.append(f"| `{key}` | {fmt(value)} |")
    return "\n".join(lines) + "\n"


README_MARKERS = ("<!-- bench-results:start -->\n", "<!-- bench-results:end -->")


def readme_section(doc: dict) -> str:
    """The part of results.md the README shows: headlines, stages, capacity model, headings one level down."""
    text = render_markdown(doc)
    body = text[text.index("## Headline figures"):text.index("## Runs")].rstrip() + "\n"
    body = body.replace("\n## ", "\n### ")
    if body.startswith("## "):
        body = "#" + body
    lead = text[:text.index("## Headline figures")].split("\n", 1)[1].strip()
    return lead + "\n\n" + body + "\nEvery figure of every run: [`bench/results.md`](bench/results.md).\n"


def update_readme(readme: Path, doc: dict) -> bool:
    """Replace the README's benchmark section with `readme_section(doc)`; False if the markers are missing."""
    text = readme.read_text(encoding="utf-8")
    start, end = README_MARKERS
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + readme_section(doc) + end + tail, encoding="utf-8")
    return True


def main(argv: list[str]) -> int:
    """`report.py [results.json]`: print results.md; `--readme` also rewrites the README's section."""
    args = [a for a in argv[1:] if a != "--readme"]
    path = Path(args[0]) if args else Path(__file__).resolve().parent / "results.json"
    doc = json.loads(path.read_text())
    if "--readme" in argv:
        update_readme(Path(__file__).resolve().parents[1] / "README.md", doc)
    sys.stdout.write(render_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
