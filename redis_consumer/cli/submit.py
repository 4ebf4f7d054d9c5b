"""`redis-consumer submit`: upload inputs and enqueue kiosk-compatible jobs.

Each input goes to the bucket under `uploads/<uuid>/<name>`; its job hash is written exactly as
the DeepCell Kiosk frontend writes it (HSET, then LPUSH of the key), so workers cannot tell our
jobs from the kiosk's. A `.zip` is one job on `{queue}-zip`, which the zip consumer fans out.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..queue import keys as qkeys
from ..queue.producer import confirm_replicated, enqueue
from ..utils.safe_zip import IMAGE_EXTENSIONS
from ..utils.timestamps import now_iso
from .common import (
    CliError,
    add_connection_args,
    bucket_client,
    command,
    connect_redis,
    load_settings,
)

_GLOB_CHARS = set("*?[")
#: What a folder contributes (files named explicitly or by a glob are always taken).
INPUT_SUFFIXES = frozenset((*IMAGE_EXTENSIONS, ".zip"))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="upload files and enqueue one job per file (a .zip goes to QUEUE-zip)",
        description="Upload inputs to the bucket under uploads/, write a kiosk-compatible job hash per input, "
        "LPUSH it and print the job keys. PATH may be a file, a folder, a glob or a .zip.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, globs or .zip archives")
    p.add_argument("--queue", "-q", required=True, help="queue name, e.g. segmentation")
    p.add_argument("--model", metavar="NAME:VERSION", help="model to run (default: SEGMENTATION_MODEL)")
    p.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                   help="extra job field, e.g. channels=0 or scale=1.2 (repeatable)")
    p.add_argument("--wait", action="store_true", help="show progress until every job ends; exit 0 only if all are done")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up waiting after this long")
    p.add_argument("--json", action="store_true", help="print the job keys as a JSON list (with --wait: key -> status)")
    add_connection_args(p, bucket=True)
    p.set_defaults(func=run)


def parse_model(text: str) -> tuple[str, str]:
    """`NAME:VERSION` -> (name, version); a `CliError` for anything else."""
    name, sep, version = text.strip().rpartition(":")
    if not sep or not name or not version.isdigit():
        raise CliError(f"--model must look like NAME:VERSION with a whole-number version, got {text!r}")
    return name, version


def parse_fields(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    reserved = {"status", "input_file_name", "original_name", "model_name", "model_version", "created_at",
                "updated_at"}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--field must look like NAME=VALUE, got {item!r}")
        if name.strip() in reserved:
            raise CliError(f"--field cannot set {name.strip()!r}; submit sets it")
        out[name.strip()] = value
    return out


def expand_inputs(paths: Iterable[str]) -> list[Path]:
    """Files named by paths, globs and folders (recursively: images and zips, hidden files skipped), once each."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in INPUT_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif _GLOB_CHARS & set(raw):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(raw), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                raise CliError(f"no files match {raw!r}")
            found += files
        else:
            raise CliError(f"no such file or folder: {raw}")
    unique: list[Path] = []
    seen: set[Path] = set()
    for p in found:
        resolved = p.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(p)
    if not unique:
        raise CliError("no input files found in the given paths")
    return unique


def job_hash(input_key: str, original_name: str, model_name: str, model_version: str,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The fields a kiosk frontend writes for a new job."""
    stamp = now_iso()
    return {
        **dict(extra or {}),
        "status": "new",
        "input_file_name": input_key,
        "original_name": original_name,
        "model_name": model_name,
        "model_version": str(model_version),
        "created_at": stamp,
        "updated_at": stamp,
    }


def submit_file(client: Any, storage: Any, path: Path, queue: str, model_name: str, model_version: str,
                extra: Mapping[str, str] | None = None) -> str:
    """Upload one input and enqueue its job; returns the job key (`.zip` files go to `{queue}-zip`)."""
    target = qkeys.zip_queue(queue) if path.suffix.lower() == ".zip" else queue
    token = uuid.uuid4().hex
    name = path.name.replace(":", "_")
    input_key, _url = storage.upload(str(path), f"uploads/{token}/{name}")
    key = f"{target}:{name}:{token}"
    enqueue(client, target, key, job_hash(input_key, path.name, model_name, model_version, extra))
    return key


def submit_paths(client: Any, storage: Any, paths: Iterable[Path], queue: str, model_name: str,
                 model_version: str, extra: Mapping[str, str] | None = None) -> list[str]:
    """`submit_file` for each path, in order."""
    return [submit_file(client, storage, p, queue, model_name, model_version, extra) for p in paths]


def validate_queue(queue: str) -> str:
    queue = queue.strip()
    if not queue or any(c.isspace() for c in queue) or queue.endswith("-zip") or queue.startswith(("dead-", "processing-")):
        raise CliError(f"--queue must be a plain queue name such as 'segmentation' (zips go to it automatically), got {queue!r}")
    return queue


def _warn_if_unserved(client: Any, queue: str, has_zip: bool) -> None:
    """Say so (stderr, not an error) when no live worker serves a queue we just filled."""
    sec, usec = client.time()
    now = sec + usec / 1e6
    for name in [queue] + ([qkeys.zip_queue(queue)] if has_zip else []):
        if client.zcount(qkeys.consumers(name), f"({now}", "+inf") == 0:
            print(f"redis-consumer: note: no live worker serves {name!r} yet; the jobs wait until one starts",
                  file=sys.stderr)


@command
def run(args: Any) -> int:
    queue = validate_queue(args.queue)
    settings = load_settings(args)
    model_name, model_version = parse_model(args.model or settings.SEGMENTATION_MODEL)
    extra = parse_fields(args.field)
    files = expand_inputs(args.paths)
    client = connect_redis(settings)
    storage = bucket_client(settings)
    keys = submit_paths(client, storage, files, queue, model_name, model_version, extra)
    if confirm_replicated(client) is False:
        print("redis-consumer: warning: no Redis replica confirmed the new jobs within 1 s; if the primary "
              "fails over now they may be lost, so check them with `redis-consumer status`", file=sys.stderr)
    _warn_if_unserved(client, queue, any(k.startswith(qkeys.zip_queue(queue) + ":") for k in keys))
    if not args.wait:
        if args.json:
            print(json.dumps(keys))
        else:
            print("\n".join(keys))
        return 0
    from .progress import ProgressBar, wait_for_jobs

    if not args.json:
        print("\n".join(keys), flush=True)
    final = wait_for_jobs(client, keys, timeout=args.timeout, bar=ProgressBar(len(keys)))
    if args.json:
        print(json.dumps(final, indent=2))
    bad = {k: s for k, s in final.items() if s != "done"}
    if not bad:
        return 0
    for key, status in bad.items():
        reason = client.hget(key, "reason") or ""
        print(f"{key}: {status}{(' - ' + reason) if reason else ''}", file=sys.stderr)
    still = [k for k, s in bad.items() if s not in (*qkeys.FINAL_STATUSES, "missing")]
    return 3 if still and len(still) == len(bad) else 1
