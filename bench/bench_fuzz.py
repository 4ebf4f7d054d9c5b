"""Fuzz the fleet with producer-written jobs for a time budget; print cases tried and failures found.

The long profile of tests/test_fuzz_producer.py: the same strategies (tests/helpers/fuzz_jobs.py)
and the same real fleet and checks (tests/helpers/fuzz_fleet.py), but failures are collected
instead of raised, so one run counts every distinct failure. Two phases share the budget: all
inputs, then the known defect classes of issue 15 excluded (plus `--exclude` classes). For the first
failure of each distinct signature the bench replays each suspect job alone and drops its fields
one at a time while it still fails, and prints that minimal job as JSON (values as text or hex).

Usage: `python bench/bench_fuzz.py [--quick] [--seconds S] [--minimize-seconds S] [--exclude C,...]
[--only all|excluded] [--seed N]`. Prints one JSON object. No hypothesis database: failures are
collected, not raised (tests/test_fuzz_producer.py with FUZZ_PROFILE=long keeps one in .hypothesis/fuzz).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FUZZ_PROFILE", "long")

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.helpers.fuzz_fleet import Failure, Fleet, cleanup
from tests.helpers.fuzz_jobs import (
    FOUND_CLASSES,
    KNOWN_CLASSES,
    JobSpec,
    classify,
    job_specs,
)
from tests.helpers.redis_server import RedisServer

_EXC = re.compile(r"\\n([A-Za-z_.]*(?:Error|Exception|Exit|Interrupt)): ")


class _BudgetSpent(Exception):
    """Raised from the example once the time budget is spent: stops hypothesis generating."""


def signature(failure: Failure, suspects: list[JobSpec]) -> str:
    """What makes two failures the same bug: kind, exception type in the log, known classes."""
    exc = _EXC.findall(failure.log_tail)
    tags = sorted({t for s in suspects for t in s.tags})
    return f"{failure.kind}|{exc[-1] if exc else ''}|{','.join(tags)}"


def minimize(fleet: Fleet, suspects: list[JobSpec], kind: str, budget: float) -> dict | None:
    """The smallest single job (fewest fields) among `suspects` that alone still fails with `kind`."""
    deadline = time.monotonic() + budget

    def fails(spec: JobSpec) -> bool:
        return any(f.kind == kind for f in fleet.run_batch([spec]))

    culprit = None
    for spec in suspects[:6]:
        if time.monotonic() > deadline:
            break
        if fails(spec):
            culprit = spec
            break
    if culprit is None:
        return None
    fields = dict(culprit.fields)
    for name in list(fields):
        if time.monotonic() > deadline:
            break
        trial = {k: v for k, v in fields.items() if k != name}
        spec = JobSpec(culprit.queue_kind, trial, culprit.upload, culprit.tags)
        if trial and fails(spec):
            fields = trial
    for name in list(fields):  # then shorten long values while it still fails
        for size in (len(fields[name]) // 10, 64):
            if len(fields[name]) <= size or size < 64 or time.monotonic() > deadline:
                continue
            trial = {**fields, name: fields[name][:size]}
            if fails(JobSpec(culprit.queue_kind, trial, culprit.upload, culprit.tags)):
                fields = trial
    if culprit.upload and time.monotonic() < deadline:
        spec = JobSpec(culprit.queue_kind, fields, None, culprit.tags)
        if fails(spec):
            culprit = JobSpec(culprit.queue_kind, fields, None, culprit.tags)
    final = JobSpec(culprit.queue_kind, fields, culprit.upload)
    final.tags = classify(final)
    return final.describe(limit=200)


def run_phase(fleet: Fleet, exclude_known: bool, exclude: tuple[str, ...], seconds: float, batch_size: int,
              minimize_seconds: float, seed: int | None) -> dict:
    start = time.monotonic()
    stats = {"exclude_known": exclude_known, "exclude": list(exclude), "batches": 0, "cases": 0, "failures": 0}
    found: dict[str, dict] = {}
    firsts: dict[str, tuple[Failure, list[JobSpec]]] = {}

    # failures are collected, never raised, so there is nothing for a database to keep
    @settings(max_examples=100_000, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate], derandomize=seed is not None)
    @given(batch=st.lists(job_specs(exclude_known=exclude_known, exclude=exclude), min_size=max(1, batch_size // 2), max_size=batch_size))
    def explore(batch: list[JobSpec]) -> None:
        if time.monotonic() - start > seconds:
            raise _BudgetSpent
        stats["batches"] += 1
        stats["cases"] += len(batch)
        t0 = time.monotonic()
        failures = fleet.run_batch(batch)
        print(f"batch {stats['batches']}: {len(batch)} job(s) in {time.monotonic() - t0:.1f}s, "
              f"{[f.kind for f in failures]}", file=sys.stderr, flush=True)
        for failure in failures:
            stats["failures"] += 1
            suspects = [s for s in batch if s.describe() in failure.jobs] or batch
            sig = signature(failure, suspects)
            entry = found.setdefault(sig, {"signature": sig, "count": 0, "detail": failure.detail,
                                           "log_excerpt": _excerpt(failure.log_tail)})
            entry["count"] += 1
            firsts.setdefault(sig, (failure, suspects))

    try:
        explore()
    except _BudgetSpent:
        pass
    explore_seconds = time.monotonic() - start
    left = minimize_seconds
    for sig, (failure, suspects) in firsts.items():
        if left <= 0:
            break
        t0 = time.monotonic()
        found[sig]["minimal_repro"] = minimize(fleet, suspects, failure.kind, min(left, 30.0))
        left -= time.monotonic() - t0
    stats["distinct"] = list(found.values())
    stats["explore_seconds"] = round(explore_seconds, 1)
    stats["seconds"] = round(time.monotonic() - start, 1)
    return stats


def _excerpt(log_tail: str, chars: int = 1200) -> str:
    idx = log_tail.find("Traceback")
    return log_tail[max(0, idx - 200): idx + chars] if idx >= 0 else log_tail[-chars:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 s of fuzzing, 10 s of minimizing")
    p.add_argument("--seconds", type=float, default=None, help="fuzzing budget over both phases (default 40)")
    p.add_argument("--minimize-seconds", type=float, default=None, help="budget for minimal repros (default 20)")
    p.add_argument("--batch-size", type=int, default=6)
    p.add_argument("--exclude", default="", help=f"also leave out these found classes: {','.join(FOUND_CLASSES)}")
    p.add_argument("--only", choices=("all", "excluded"), default=None)
    p.add_argument("--seed", type=int, default=None, help="derandomize (same cases every run)")
    args = p.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (20.0 if args.quick else 40.0)
    minimize_seconds = args.minimize_seconds if args.minimize_seconds is not None else (10.0 if args.quick else 20.0)
    exclude = tuple(c for c in args.exclude.split(",") if c)
    warnings.simplefilter("ignore")
    started = time.monotonic()
    redis = RedisServer(appendonly=False).start()
    fleet = Fleet(redis.url).start()
    phases = [] if args.only == "excluded" else [(False, ())]
    if args.only != "all":
        phases.append((True, exclude))
    results = []
    try:
        for exclude_known, excl in phases:
            results.append(run_phase(fleet, exclude_known, excl, seconds / len(phases), args.batch_size,
                                     minimize_seconds / len(phases), args.seed))
    finally:
        cleanup(fleet)
        redis.cleanup()
    report = {
        "bench": "fuzz", "profile": os.environ["FUZZ_PROFILE"], "known_classes": list(KNOWN_CLASSES),
        "cases": sum(r["cases"] for r in results), "batches": sum(r["batches"] for r in results),
        "failures": sum(r["failures"] for r in results),
        "distinct_failures": sum(len(r["distinct"]) for r in results),
        "fleet_restarts": fleet.restarts, "duration_s": round(time.monotonic() - started, 1), "phases": results,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
