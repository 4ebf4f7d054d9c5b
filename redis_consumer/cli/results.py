"""`redis-consumer results`: download a finished job's result zip and unpack it into a folder.

Extraction refuses entries that would land outside the target folder (absolute paths, `..`),
so a result zip can never write elsewhere on the user's disk.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .common import (
    EXIT_RUNNING,
    CliError,
    add_connection_args,
    bucket_client,
    command,
    connect_redis,
    job_fields,
    load_settings,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "results",
        help="download a finished job's result zip and unpack it into --out",
        description="Download the result zip of a done job from the bucket and unpack it into a folder.",
    )
    p.add_argument("key", metavar="KEY", help="job key printed by submit")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to unpack into (created if missing)")
    p.add_argument("--keep-zip", action="store_true", help="also keep the downloaded zip in DIR")
    p.add_argument("--json", action="store_true", help="print the unpacked file paths as a JSON list")
    add_connection_args(p, bucket=True)
    p.set_defaults(func=run)


def safe_extract(zip_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Unpack every regular entry under `out_dir`; a `CliError` for a corrupt or escaping archive."""
    out = Path(out_dir).resolve()
    written: list[Path] = []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise CliError(f"the result zip is corrupt (entry {bad!r} fails its checksum)", 1)
            for info in archive.infolist():
                if info.is_dir():
                    continue
                target = (out / info.filename).resolve()
                if info.filename.startswith(("/", "\\")) or out not in target.parents:
                    raise CliError(f"the result zip holds an unsafe path {info.filename!r}; nothing more extracted", 1)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                written.append(target)
    except zipfile.BadZipFile as exc:
        raise CliError(f"the result is not a valid zip ({exc})", 1) from None
    return written


def output_key(fields: dict[str, str], key: str) -> str:
    status = fields.get("status", "")
    if status == "failed":
        raise CliError(f"job {key} failed: {fields.get('reason') or 'no reason recorded'}", 1)
    if status != "done":
        raise CliError(f"job {key} is not finished yet (status {status or 'unknown'}); try again later", EXIT_RUNNING)
    name = fields.get("output_file_name")
    if not name:
        raise CliError(f"job {key} is done but recorded no output_file_name (its consumer writes no result zip)", 1)
    return name


@command
def run(args: Any) -> int:
    settings = load_settings(args)
    client = connect_redis(settings)
    name = output_key(job_fields(client, args.key), args.key)
    storage = bucket_client(settings.replace(ALLOWED_INPUT_PREFIXES=()))  # that limit is for job inputs
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror}") from None
    with tempfile.TemporaryDirectory(prefix="rc-results-") as tmp:
        local = storage.download(name, tmp)
        files = safe_extract(local, out)
        if args.keep_zip:
            shutil.copy(local, out / Path(name).name)
    if args.json:
        print(json.dumps([str(f) for f in files]))
    else:
        for f in files:
            print(f)
    return 0
