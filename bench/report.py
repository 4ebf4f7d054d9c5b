"""Render bench/results.json as Markdown: headline figures beside their baselines, then every figure.

Kept apart from the runner so the README (or a test) can re-render an existing results.json
without re-running anything: `python bench/report.py [bench/results.json]`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: (what, benchmark, figure path, baseline path or None, unit, how the baseline was measured).
#: Paths are dotted keys into the benchmark's JSON; the first path that exists is used when a
#: tuple of alternatives is given. Missing figures render as "n/a" (a benchmark changed or failed).
HEADLINES: list[tuple[str, str, Any, Any, str, str]] = [
    ("Idle pickup latency, p50", "queue", "pickup_p50_ms", "baseline_pickup_p50_ms", "ms",
     "kiosk-style polling (LLEN/RPOPLPUSH, sleep when empty)"),
    ("Idle pickup latency, p99", "queue", "pickup_p99_ms", "baseline_pickup_p99_ms", "ms", "same polling loop"),
    ("Null-consumer throughput, one worker", "queue", "throughput_jobs_per_s", "baseline_throughput_jobs_per_s",
     "jobs/s", "polling loop without claim tokens, fencing or Lua (unsafe under failure)"),
    ("Tensor encode+decode, 16 MB float32", "codec", "ours_total_ms", "list_float_val_total_ms", "ms",
     "kiosk encoding: repeated float_val"),
    ("Tensor encode+decode vs protobuf", "codec", "ours_total_ms", "protobuf_content_total_ms", "ms",
     "protobuf serializer with tensor_content"),
    ("Tensor encode+decode vs one copy", "codec", "ours_total_ms", "copy_ms", "ms", "one tobytes() of the same array"),
    ("Codec encode+decode vs warm memcpy, 1 MB", "codec", "by_size.1MB.ours_ms", "by_size.1MB.warm_memcpy_ms", "ms",
     "np.copyto into a buffer written once before"),
    ("Codec encode+decode vs warm memcpy, 16 MB", "codec", "by_size.16MB.ours_ms", "by_size.16MB.warm_memcpy_ms",
     "ms", "np.copyto into a buffer written once before"),
    ("Codec encode+decode vs warm memcpy, 64 MB", "codec", "by_size.64MB.ours_ms", "by_size.64MB.warm_memcpy_ms",
     "ms", "np.copyto into a buffer written once before"),
    ("Predict round trip, 16 MB, loopback", "codec", "round_trip_16mb_ms", "grpc_bytes_echo_16mb_ms", "ms",
     "bare grpcio bytes echo of the same payload, same server process"),
    ("GPU busy at per-pixel cost, 256x256 tiles, one worker", "gpu", "busy_256_float32", "busy_256_float32_baseline",
     "fraction", "default malloc, no buffer pool"),
    ("GPU busy at per-pixel cost, 512x512 tiles, one worker", "gpu", "busy_512_float32", "busy_512_float32_baseline",
     "fraction", "default malloc, no buffer pool"),
    ("GPU busy, 256x256, model declares uint16 inputs", "gpu", "busy_256_uint16", "busy_256_float32", "fraction",
     "float32 inputs, same settings"),
    ("Images/s into one GPU, 2048x2048 in 256x256 tiles", "gpu", "images_per_s_256_float32",
     "images_per_s_256_float32_baseline", "images/s", "default malloc, no buffer pool"),
    ("Worker processes per GPU (256x256, busy >= 0.9)", "gpu", "workers_per_gpu_256", None, "processes", ""),
    ("Null jobs/s, one worker, vs best peer", "peers", "ours_null_jobs_per_s", "best_peer_null_jobs_per_s", "jobs/s",
     "fastest of RQ, Celery, Dramatiq, arq, taskiq on the same Redis"),
    ("Idle pickup p50 vs fastest peer", "peers", "ours_pickup_p50_ms", "best_peer_pickup_p50_ms", "ms",
     "fastest peer's p50, same Redis"),
    ("Redis CPU per null job vs cheapest peer", "peers", "ours_redis_cpu_us_per_job",
     "cheapest_peer_redis_cpu_us_per_job", "µs", "cheapest peer, same Redis (used_cpu_sys+user)"),
    ("SIGKILLed job re-run, ours with defaults", "peers", "systems.ours.sigkill_rerun_s", "fastest_peer_rerun_s", "s",
     "fastest peer with its redelivery setting at 10 s (n/a: none within the cap)"),
    ("Consumer CPU per 1024x1024 image", "consumer_cpu", "cpu_ms_per_image_median", "target_cpu_ms", "ms CPU",
     "target (not a measurement)"),
    ("Consumer CPU outside the model call", "consumer_cpu", "main_thread_cpu_ms_per_image_median",
     "cpu_ms_per_image_median", "ms CPU", "whole process incl. gRPC threads"),
    ("Redis commands per zip child (100-image zip)", "fanin", "large.redis_commands_per_child",
     "small.redis_commands_per_child", "commands", "10-image zip, same run (equal = nothing polls)"),
    ("Parent done after its last child", "fanin", "large.parent_done_after_last_child_s", None, "s", ""),
    ("Time to first result, file:// bucket (start -> first job done)", "coldstart", "file.first_result_s",
     "baseline_python.wall_s", "s", "bare `python -c` start, same run (target 0.4 s)"),
    ("Time to first result, s3:// bucket (moto)", "coldstart", "s3.first_result_s", "baseline_python.wall_s", "s",
     "bare `python -c` start, same run (target 0.6 s)"),
    ("Time to first result, gs:// bucket (emulator)", "coldstart", "gs.first_result_s", "baseline_python.wall_s", "s",
     "bare `python -c` start, same run (target 0.6 s)"),
    ("Worker idle RSS after its first job", "coldstart", "file.idle_rss_mb", "baseline_python.rss_mb", "MB",
     "bare interpreter (target 80 MB)"),
    ("S3 download throughput, 64 MB", "storage", "storage_download_mb_s", "plain_http_get_mb_s", "MB/s",
     "plain HTTP GET of the same object"),
    ("S3 download memory growth, 64 MB object", "storage", "rss_growth_download_mb", "size_mb", "MB",
     "object size (streaming keeps growth far below it)"),
    ("Redis commands per segmentation job", "redis_capacity", "segmentation.commands_per_job",
     "noop.commands_per_job", "commands sent", "null consumer"),
    ("Redis commands per null job, incl. inside Lua", "redis_capacity", "noop.commands_total_per_job", None,
     "commands", ""),
    ("Redis CPU per null job (commandstats)", "redis_capacity", "noop.redis_usec_per_job", "targets.noop_redis_usec_per_job",
     "µs", "target (not a measurement)"),
    ("Redis CPU per segmentation job vs null job", "redis_capacity", "segmentation.redis_usec_per_job",
     "noop.redis_usec_per_job", "µs", "null consumer, same run (target ratio <= 2)"),
    ("Jobs/s one Redis primary carries (segmentation)", "redis_capacity",
     "segmentation.jobs_per_second_per_redis", "plain_command_ops_per_second", "jobs/s",
     "redis-benchmark plain commands/s"),
    ("Demo throughput, one worker", "demo", "images_per_second", None, "images/s", ""),
    ("Chaos: jobs through disruptions", "chaos", "jobs", None, "jobs", ""),
    ("Chaos: lost jobs", "chaos", "lost", None, "jobs", "must be 0"),
    ("Chaos: stuck jobs", "chaos", "stuck", None, "jobs", "must be 0"),
    ("Chaos: duplicate results", "chaos", "duplicate_results", None, "jobs", "must be 0"),
    ("Chaos: re-executions (at-least-once)", "chaos", "duplicates_executed", None, "executions", "allowed"),
    ("Chaos: max recovery time", "chaos", "max_recovery_seconds", None, "s", "HEARTBEAT_TTL=3 s in the soak"),
]


def get(data: Any, path: Any) -> Any:
    """Value at a dotted path (or the first existing of several paths), else None."""
    if path is None:
        return None
    for candidate in (path if isinstance(path, (tuple, list)) else (path,)):
        cur = data
        ok = True
        for part in candidate.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                ok = False
                break
        if ok:
            return cur
    return None


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


def ratio(figure: Any, baseline: Any) -> str:
    if isinstance(figure, (int, float)) and isinstance(baseline, (int, float)) and baseline and figure:
        r = figure / baseline
        return f"{r:.3g}x" if r >= 0.01 else f"{r:.2g}x"
    return ""


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows += flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)]
    return rows


#: Sizing target of the capacity model: a million images a day, with a peak this many times the mean.
IMAGES_PER_DAY = 1_000_000
PEAK_FACTOR = 4.0
MODEL_MS = (10.0, 50.0, 200.0)  # per-image model (GPU) time examples


def capacity_lines(results: dict) -> list[str]:
    """The capacity model, computed from this run's figures (docs/capacity.md explains it)."""
    cap = (results.get("redis_capacity") or {}).get("data") or {}
    cpu = (results.get("consumer_cpu") or {}).get("data") or {}
    gpu = (results.get("gpu") or {}).get("data") or {}
    seg = cap.get("segmentation") or {}
    jobs_s = seg.get("jobs_per_second_per_redis")
    cpu_ms = cpu.get("cpu_ms_per_image_median")
    util = gpu.get("utilisation_pipelined") or 0.9
    mean = IMAGES_PER_DAY / 86400
    peak = mean * PEAK_FACTOR
    intro = (f"Sized for {IMAGES_PER_DAY:,} images a day: {mean:.1f} images/s on average, {peak:.1f}/s at a "
             f"{PEAK_FACTOR:g}x peak. Inputs from this run: Redis commands sent per job "
             f"{fmt(seg.get('commands_per_job'))} (+{fmt(seg.get('commands_inside_lua_per_job'))} inside Lua), "
             f"Redis CPU {fmt(seg.get('redis_usec_per_job'))} µs per job, plain Redis command rate "
             f"{fmt(cap.get('plain_command_ops_per_second'))}/s (`redis-benchmark`), consumer CPU "
             f"{fmt(cpu_ms)} ms per 1024x1024 image, GPU busy fraction with pipelining {fmt(util)}.")
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


def render_markdown(doc: dict) -> str:
    results = doc.get("results", {})
    m = doc.get("machine", {})
    lines = [
        "# Benchmark results",
        "",
        (f"Generated {doc.get('generated_at', '?')} by `make bench` (`bench/run_all.py`, {doc.get('mode', '?')} "
         f"mode) on {m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, Redis {m.get('redis', '?')}. "
         "Every baseline was measured in the same run on the same machine; compare ratios, not absolute numbers, "
         "across machines."),
        "",
        "## Headline figures",
        "",
        "| What | Figure | Baseline | Ratio | Unit | Baseline is |",
        "|---|---|---|---|---|---|",
    ]
    for what, bench, fig_path, base_path, unit, base_desc in HEADLINES:
        data = results.get(bench, {}).get("data")
        figure = get(data, fig_path) if data else None
        baseline = get(data, base_path) if data else None
        lines.append(f"| {what} | {fmt(figure)} | {fmt(baseline) if base_path else '—'} | "
                     f"{ratio(figure, baseline) if base_path else ''} | {unit} | {base_desc} |")
    lines += [""] + capacity_lines(results)
    lines += ["## Runs", "", "| Benchmark | OK | Seconds | Exit code |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {'yes' if r.get('ok') else '**no**'} | {fmt(r.get('seconds'))} | {r.get('exit_code')} |")
    for name, r in results.items():
        lines += ["", f"## {name}", "", f"`{r.get('script', '')}`", ""]
        if not r.get("ok"):
            lines += ["Failed:", "", "```", str(r.get("error", ""))[-1500:], "```"]
            continue
        lines += ["| Figure | Value |", "|---|---|"]
        for key, value in flatten(r["data"]):
            if isinstance(value, list) and value and isinstance(value[0], dict):
                value = f"{len(value)} entries (see results.json)"
            lines.append(f"| `{key}` | {fmt(value)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "results.json"
    sys.stdout.write(render_markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


README_MARKERS = ("<!-- bench-results:start -->\n", "<!-- bench-results:end -->")


def readme_section(doc: dict) -> str:
    """The part of results.md the README shows: headline figures and capacity model, headings one level down."""
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
