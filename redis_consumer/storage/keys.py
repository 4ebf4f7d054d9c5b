"""Key confinement and deterministic output names.

Job hashes come from outside (a frontend, a lab script), so every key they carry is treated as
untrusted: it must stay inside the worker's bucket and prefix. One helper does this for all
three backends so S3, GCS and local folders refuse exactly the same keys.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import urlsplit

from ..errors import UserError

MAX_KEY_BYTES = 1024  # S3 and GCS both cap object names at 1024 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _shown(key: str) -> str:
    """The key as it may appear in a user-facing message (bounded, one line)."""
    text = _CONTROL.sub("?", str(key))
    return text if len(text) <= 200 else text[:199] + "…"


def confine(key: str, scheme: str, bucket: str, prefix: str = "") -> str:
    """Return `key` relative to the bucket prefix, or raise `UserError` naming it.

    Accepts a plain relative key (`uploads/a.tif`) or a full URL inside this bucket and prefix
    (`s3://bucket/prefix/uploads/a.tif`). Refuses `..` and `.` segments, absolute paths,
    backslashes, control characters, empty segments, other schemes and other buckets.
    """
    if not isinstance(key, str) or not key.strip():
        raise UserError("The storage key is empty; give the path of a file inside the bucket.")
    raw = key.strip()
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme.lower() != scheme or (scheme != "file" and parts.netloc != bucket):
            raise UserError(f"The key '{_shown(key)}' points outside this worker's bucket; give a key inside it.")
        if parts.query or parts.fragment:
            raise UserError(f"The key '{_shown(key)}' has a query or fragment; give a plain object key.")
        path = parts.path.lstrip("/") if scheme != "file" else parts.path
        if scheme == "file":
            root = "/" + bucket.strip("/")
            if not (path == root or path.startswith(root.rstrip("/") + "/")):
                raise UserError(f"The key '{_shown(key)}' points outside this worker's bucket; give a key inside it.")
            path = path[len(root.rstrip("/")) + 1:]
        if prefix:
            if not path.startswith(prefix + "/"):
                raise UserError(f"The key '{_shown(key)}' points outside this worker's bucket prefix; give a key inside it.")
            path = path[len(prefix) + 1:]
        raw = path
    if raw.startswith(("/", "~")):
        raise UserError(f"The key '{_shown(key)}' is an absolute path; give a path relative to the bucket.")
    if "\\" in raw or _CONTROL.search(raw):
        raise UserError(f"The key '{_shown(key)}' contains a backslash or control character; use plain '/' paths.")
    segments = raw.split("/")
    if any(s in ("..", ".") for s in segments):
        raise UserError(f"The key '{_shown(key)}' contains '.' or '..' segments; give a path inside the bucket.")
    if any(s == "" for s in segments):
        raise UserError(f"The key '{_shown(key)}' has an empty path segment; remove the doubled or trailing '/'.")
    if len(full_key(prefix, raw).encode("utf-8")) > MAX_KEY_BYTES:
        raise UserError(f"The key '{_shown(key)}' is longer than {MAX_KEY_BYTES} bytes; use a shorter name.")
    return raw


def full_key(prefix: str, key: str) -> str:
    """The object name in the bucket: `prefix/key` (or `key` without a prefix)."""
    return f"{prefix}/{key}" if prefix else key


def check_allowed(key: str, allowed: tuple[str, ...] | list[str]) -> None:
    """Raise `UserError` unless `key` starts with one of the allowed prefixes (empty = all)."""
    if allowed and not any(key.startswith(p.lstrip("/")) for p in allowed):
        raise UserError(
            f"The key '{_shown(key)}' is not under an allowed input prefix "
            f"({', '.join(allowed)}); upload the input there."
        )


def output_key(job_key: str, suffix: str = ".zip") -> str:
    """Deterministic `output/<safe name>.zip` for a job, so a re-run overwrites its old result.

    Characters other than letters, digits, `.`, `_` and `-` become `_`; when that changes the
    name (or it is truncated) a short hash of the job key keeps two different jobs apart.
    """
    raw = str(job_key)
    safe = re.sub(r"\.{2,}", ".", _UNSAFE_NAME.sub("_", raw)).strip("._") or "job"
    if safe != raw or len(safe) > 150:
        digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:10]
        safe = f"{safe[:150]}_{digest}"
    return f"output/{safe}{suffix}"
