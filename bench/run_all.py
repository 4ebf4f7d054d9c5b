"""Run every benchmark and the chaos soak; write bench/results.json and bench/results.md.

Each `bench/bench_*.py` and `bench/chaos.py` runs in its own process (`--quick` when asked) and
prints one JSON object on stdout; this runner collects them with their wall time and exit code,
then renders a Markdown table that puts each headline figure beside the baseline measured in the
same run (see `report.HEADLINES`) followed by every figure each benchmark printed.

Usage: `python bench/run_all.py [--quick] [--only NAME ...] [--skip NAME ...] [--timeout S] [--list]`
(`make bench` runs it without `--quick`). Exit code 1 when any benchmark failed to produce JSON.
Each benchmark is bounded: at `--timeout` its whole process group gets SIGTERM (the benchmarks
clean up their servers on it), then SIGKILL, and the run goes on with the next one. Every entry
of results.json records its own mode and finish time, so figures kept from an earlier `--only`
run say so in the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from report import render_markdown, update_readme


def discover() -> list[Path]:
    """Every bench_*.py in name order, then chaos.py (the longest) last."""
    scripts = sorted(BENCH.glob("bench_*.py"))
    chaos = BENCH / "chaos.py"
    return scripts + ([chaos] if chaos.exists() else [])


def bench_name(path: Path) -> str:
    return path.stem.removeprefix("bench_")


def last_json_object(text: str) -> dict | None:
    """The JSON object a benchmark printed (the last line that parses as an object)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


#: Seconds a timed-out benchmark's process group gets between SIGTERM and SIGKILL.
GRACE_S = 20.0


def run_one(path: Path, quick: bool, timeout: float) -> dict:
    """Run one benchmark in its own process group, at most `timeout` s; its JSON, time and exit code."""
    cmd = [sys.executable, str(path)] + (["--quick"] if quick else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        out, err = _stop_group(proc)
        err = (err or "") + f"\ntimed out after {timeout:g}s"
    seconds = round(time.monotonic() - start, 1)
    data = last_json_object(out or "")
    script = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    entry = {"script": str(script), "mode": "quick" if quick else "full",
             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "exit_code": proc.returncode,
             "seconds": seconds, "ok": data is not None}
    if timed_out:  # figures printed before the timeout are kept, flagged
        entry["timed_out"] = True
    if data is not None:
        entry["data"] = data
    else:
        entry["error"] = (err or out or "no output")[-2000:]
    return entry


def _stop_group(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM the benchmark's process group (servers, workers it started), SIGKILL after GRACE_S."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return "", ""


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout
        info["redis"] = out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    except OSError:
        info["redis"] = "not found"
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark (each < 60 s)")
    p.add_argument("--only", nargs="*", default=[],
                   help="run only these (e.g. queue chaos); the others' figures in results.json are kept")
    p.add_argument("--skip", nargs="*", default=[], help="skip these")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 300 quick, 900 full)")
    p.add_argument("--out", default=str(BENCH), help="directory for results.json and results.md")
    p.add_argument("--list", action="store_true", help="print the benchmarks this would run, then exit")
    args = p.parse_args(argv)
    timeout = args.timeout or (300.0 if args.quick else 900.0)
    if args.list:
        names = [bench_name(path) for path in discover()]
        print("\n".join(n for n in names if (not args.only or n in args.only) and n not in args.skip))
        return 0

    results: dict[str, dict] = {}
    for path in discover():
        name = bench_name(path)
        if (args.only and name not in args.only) or name in args.skip:
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(path, args.quick, timeout)
        state = "ok" if results[name]["ok"] else "FAILED"
        print(f"[bench] {name}: {state} in {results[name]['seconds']}s", file=sys.stderr, flush=True)

    out = Path(args.out)
    previous = out / "results.json"
    if args.only and previous.exists():  # re-running some: keep the others' last figures
        try:
            kept = json.loads(previous.read_text()).get("results", {})
        except ValueError:
            kept = {}
        results = {**{k: v for k, v in kept.items() if k not in results}, **results}
    doc = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "results": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    (out / "results.md").write_text(render_markdown(doc))
    if out.resolve() == BENCH.resolve() and not args.quick:
        update_readme(BENCH.parent / "README.md", doc)  # the README shows the latest full run
    ran = [name for name in results if not args.only or name in args.only]
    print(f"[bench] {len(ran)} benchmarks in {sum(results[n]['seconds'] for n in ran):,.0f} s", file=sys.stderr)
    print(json.dumps({name: r["ok"] for name, r in results.items()}))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
