"""`redis-consumer demo`: the whole pipeline on embedded defaults, with a summary and a montage.

Starts a private Redis, the dev model server and three workers (segmentation, zip, mesmer),
submits synthetic nuclei images, one zip of them and two-channel cell images (mesmer) exactly as
`submit` does, plus one polaris job (an image of spots) and one caliban job (a short movie with a
division) on their own workers (`--no-kiosk-jobs` skips them), waits with a progress
bar, validates every result zip and prints throughput, latency and per-stage times. Exits 0 only
if every job is done with a valid zip; always stops what it started (also on Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..queue.keys import FINAL_STATUSES
from .common import CliError, command


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline locally on synthetic images (private Redis, dev model server, 2 workers)",
        description="Run the pipeline end to end on embedded defaults and print a summary. REDIS_URL, "
        "STORAGE_BUCKET and TF_HOST/TF_PORT point it at real services instead.",
    )
    p.add_argument("--images", type=int, default=20, help="synthetic images submitted one by one (default 20)")
    p.add_argument("--zip-images", type=int, default=4, help="images in the one zip job (default 4; 0: no zip)")
    p.add_argument("--mesmer-images", type=int, default=4,
                   help="two-channel images for mesmer jobs on QUEUE-mesmer (default 4; 0: none)")
    p.add_argument("--size", type=int, default=256, help="image height and width in pixels (default 256)")
    p.add_argument("--out", default="demo-output", metavar="DIR", help="where inputs, results, logs go (default demo-output)")
    p.add_argument("--queue", default="demo", help="queue name (default demo)")
    p.add_argument("--model", default="NuclearSegmentation:6", metavar="NAME:VERSION",
                   help="segmentation model (the kiosk's NUCLEAR_MODEL by default)")
    p.add_argument("--timeout", type=float, default=110.0, metavar="SECONDS", help="give up after this long (default 110)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic images")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-kiosk-jobs", dest="kiosk_jobs", action="store_false",
                   help="skip the polaris (spots) and caliban (tracking) jobs on QUEUE-polaris / QUEUE-caliban")
    p.set_defaults(func=run)


MARKER = ".redis-consumer-demo"


def _fresh_outdir(out: Path) -> None:
    """Empty the demo's own sub-folders of a previous run; never touch a folder the demo did not make."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise CliError(f"{out} is not empty and was not made by the demo; pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by redis-consumer demo; its sub-folders are replaced on every run\n")
    for name in ("inputs", "bucket", "results", "logs", "redis"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("montage.png", "summary.json"):
        (out / name).unlink(missing_ok=True)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so cleanup runs."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


@command
def run(args: Any) -> int:
    if min(args.images, args.zip_images, args.mesmer_images) < 0 or args.images + args.zip_images + args.mesmer_images == 0:
        raise CliError("--images, --zip-images and --mesmer-images must be non-negative and not all 0")
    if not 32 <= args.size <= 2048:
        raise CliError("--size must be between 32 and 2048")
    from .submit import parse_model, validate_queue

    queue = validate_queue(args.queue)
    model_name, model_version = parse_model(args.model)
    out = Path(args.out).resolve()
    _fresh_outdir(out)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    from ..demo.services import Services

    services = Services(out)
    try:
        return _run(args, out, queue, model_name, model_version, services)
    finally:
        services.stop()
        signal.signal(signal.SIGTERM, previous)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run(args: Any, out: Path, queue: str, model_name: str, model_version: str, services: Any) -> int:
    from ..demo import images, report
    from ..settings import Settings
    from .common import bucket_client, connect_redis
    from .progress import ProgressBar, wait_for_jobs
    from .submit import submit_paths

    t0 = time.monotonic()
    made = images.write_images(out / "inputs", args.images, seed=args.seed, size=args.size)
    zip_made = images.write_images(out / "inputs" / "for-zip", args.zip_images, seed=args.seed + 1,
                                   size=args.size, prefix="zipped")
    cells = images.write_cells(out / "inputs" / "mesmer", args.mesmer_images, seed=args.seed + 2, size=args.size)
    inputs = list(made)
    if zip_made:
        inputs.append(images.write_zip(out / "inputs" / "batch.zip", list(zip_made)))
    _say(f"made {len(made)} images, a zip of {len(zip_made)} and {len(cells)} mesmer images in {out / 'inputs'}")

    bucket = os.environ.get("STORAGE_BUCKET") or (out / "bucket").as_uri()
    redis_url = services.start_redis()
    settings = Settings.from_env(REDIS_URL=redis_url, STORAGE_BUCKET=bucket)
    client = connect_redis(settings)
    storage = bucket_client(settings.replace(ALLOWED_INPUT_PREFIXES=()))  # results live under output/
    services.start_model_server()
    if made or zip_made:
        services.start_worker("worker-segmentation", queue, "segmentation", bucket)
    if cells:
        services.start_worker("worker-mesmer", f"{queue}-mesmer", "mesmer", bucket)
    if zip_made:
        services.start_worker("worker-zip", queue, "zip", bucket)
    kiosk_inputs = _kiosk_start(args, out, queue, services, bucket)
    for note in services.notes:
        _say(note)
    _say(f"Bucket: {bucket}")

    started = time.monotonic()
    keys = submit_paths(client, storage, inputs, queue, model_name, model_version)
    keys += submit_paths(client, storage, list(cells), f"{queue}-mesmer", "MultiplexSegmentation", "9",
                         {"channels": "0,1", "compartment": "both"})
    _say(f"submitted {len(keys)} job(s) to {queue!r}" + (f", {queue}-zip" if zip_made else "")
         + (f", {queue}-mesmer" if cells else ""))
    kiosk_keys = _kiosk_submit(client, storage, kiosk_inputs, queue)
    left = max(5.0, args.timeout - (started - t0))
    final = wait_for_jobs(client, keys + list(kiosk_keys.values()), timeout=left,
                          bar=ProgressBar(len(keys) + len(kiosk_keys)), check=services.check_alive)
    wall = time.monotonic() - started
    pending = [k for k, s in final.items() if s not in (*FINAL_STATUSES, "missing")]
    if pending:
        _say(f"timed out after {args.timeout:g}s with {len(pending)} job(s) unfinished; logs in {services.log_dir}")

    result = report.Report(report.collect(client, keys), wall)
    by_name = {p.name: p for p in list(made) + list(zip_made) + list(cells)}
    pairs = []
    for record in result.jobs:
        report.check_zip(record, storage, out / "results")
        source = by_name.get(Path(record.fields.get("original_name", "")).name)
        if record.labels is not None and source is not None:
            import tifffile

            pairs.append((tifffile.imread(source), record.labels))
    data = report.summary(result)
    data["inputs"] = str(out / "inputs")
    data["results"] = str(out / "results")
    data["bucket"] = bucket
    data["logs"] = str(services.log_dir)
    if pairs:
        data["montage"] = str(report.montage(pairs, out / "montage.png"))
    kiosk_ok = _kiosk_report(client, kiosk_keys, storage, out, data)
    (out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")

    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(report.render(data))
        for kind, job in data.get("kiosk_jobs", {}).items():
            numbers = ", ".join(f"{k.replace('_count', 's')} {v}" for k, v in job.items() if k.endswith("_count"))
            print(f"{kind}: {job['status']}" + (f" ({numbers})" if numbers else ""))
        print(f"\nresult zips: {data['results']}\nmontage:     {data.get('montage', '-')}\n"
              f"worker logs: {data['logs']}\nsummary:     {out / 'summary.json'}")
    problems = [j for j in result.jobs if not (j.status == "done" and j.zip_ok)]
    for job in problems[:10]:
        _say(f"problem: {job.key}: {job.zip_problem or job.status}")
    if result.ok and kiosk_ok:
        _say(f"demo OK: {data['done']} jobs done, every result zip valid")
        return 0
    _say(f"demo FAILED: {len(problems)} job(s) not done with a valid zip")
    return 1


# -- the kiosk's polaris and caliban jobs (redis_consumer/demo/kiosk_jobs.py) -----------------------
def _kiosk_start(args: Any, out: Path, queue: str, services: Any, bucket: str) -> dict[str, Path]:
    """Inputs and workers of the polaris and caliban jobs ({} with --no-kiosk-jobs)."""
    if not args.kiosk_jobs:
        return {}
    from ..demo import images, kiosk_jobs

    made = images.write_kiosk_inputs(out / "inputs" / "kiosk", seed=args.seed + 3, size=min(args.size, 512))
    kiosk_jobs.start_workers(services, queue, bucket)
    return made


def _kiosk_submit(client: Any, storage: Any, inputs: dict[str, Path], queue: str) -> dict[str, str]:
    from ..demo import kiosk_jobs

    keys = kiosk_jobs.submit(client, storage, inputs, queue) if inputs else {}
    if keys:
        _say(f"submitted a polaris job to {queue}-polaris and a caliban job to {queue}-caliban")
    return keys


def _kiosk_report(client: Any, keys: dict[str, str], storage: Any, out: Path, data: dict[str, Any]) -> bool:
    """Check the two jobs' zips, add their pictures to the montage; True when both are fine."""
    if not keys:
        return True
    from ..demo import kiosk_jobs

    records = kiosk_jobs.check(client, keys, storage, out / "results" / "kiosk")
    data["kiosk_jobs"] = kiosk_jobs.summary(records)
    montage = kiosk_jobs.add_to_montage(out / "montage.png", kiosk_jobs.pictures(records))
    if montage.exists():
        data["montage"] = str(montage)
    ok = all(r.status == "done" and r.zip_ok for r in records)
    data["ok"] = bool(data.get("ok")) and ok
    for record in records:
        if not (record.status == "done" and record.zip_ok):
            _say(f"problem: {record.key}: {record.zip_problem or record.status}")
    return ok
