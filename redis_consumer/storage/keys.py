"""Key confinement and deterministic output names.

Job hashes come from outside (a frontend, a lab script), so every key they carry is treated as
untrusted: it must stay inside the worker's bucket and prefix. One helper does this for all
three backends so S3, GCS and local folders refuse exactly the same keys.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote, urlsplit

from ..errors import UserError

MAX_KEY_BYTES = 1024  # S3 and GCS both cap object names at 1024 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _shown(key: str) -> str:
    """The key as it may appear in a user-facing message (bounded, one line)."""
    text = _CONTROL.sub("?", str(key))
    return text if len(text) <= 200 else text[:199] + "…"


# Hosts of public object URLs that frontends send as `input_file_name` (kiosk-protocol §1.6, §5 Q1):
# multer-s3's `location` (kiosk-frontend server/controllers/upload.controller.js:60-71) is virtual-hosted.
_S3_VHOST = re.compile(r"^(?P<bucket>[a-z0-9][a-z0-9.-]*)\.s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$")
_S3_PATH = re.compile(r"^s3(?:[.-][a-z0-9-]+)*\.amazonaws\.com(?:\.cn)?$")
_GCS_HOSTS = ("storage.googleapis.com", "storage.cloud.google.com")
# kiosk-client joins its upload prefix to the server's URL and normalises it, so an S3 upload comes
# back as `uploads/../https:/bucket.s3.amazonaws.com/...` (kiosk-client kiosk_client/job.py:400-410).
_MANGLED = re.compile(r"^(?:[^/]+/)*?\.\./(https?):/+(?=[^/])")


def _outside(key: str) -> UserError:
    return UserError(f"The key '{_shown(key)}' points outside this worker's bucket; give a key inside it.")


def _https_object(key: str, raw: str, scheme: str, bucket: str) -> str:
    """The object name (prefix included) of a public https URL of an object in our bucket."""
    parts = urlsplit(raw)
    if parts.query or parts.fragment:
        raise UserError(f"The key '{_shown(key)}' has a query or fragment; give a plain object key.")
    host = (parts.hostname or "").lower()
    path = parts.path.lstrip("/")
    if parts.username or parts.password or parts.port:
        raise _outside(key)
    if scheme == "s3":
        match = _S3_VHOST.match(host)
        if match:
            if match.group("bucket") != bucket:
                raise _outside(key)
            return unquote(path)
        if _S3_PATH.match(host):
            head, _, rest = path.partition("/")
            if head != bucket:
                raise _outside(key)
            return unquote(rest)
    if scheme == "gs":
        if host in _GCS_HOSTS:
            head, _, rest = path.partition("/")
            if head != bucket:
                raise _outside(key)
            return unquote(rest)
        if host == f"{bucket}.storage.googleapis.com":
            return unquote(path)
    raise _outside(key)


def confine(key: str, scheme: str, bucket: str, prefix: str = "") -> str:
    """Return `key` relative to the bucket prefix, or raise `UserError` naming it.

    Accepts a plain relative key (`uploads/a.tif`), a full URL inside this bucket and prefix
    (`s3://bucket/prefix/uploads/a.tif`), or the public https URL of an object in this bucket as
    kiosk frontends send it: S3 virtual-hosted (`https://bucket.s3[.region].amazonaws.com/key`),
    S3 path style (`https://s3[.region].amazonaws.com/bucket/key`), GCS
    (`https://storage.googleapis.com/bucket/key`, url-decoded) and kiosk-client's
    `uploads/../https:/bucket.s3.amazonaws.com/key`. Refuses `..` and `.` segments, absolute
    paths, backslashes, control characters, empty segments, other schemes, hosts and buckets.
    """
    if not isinstance(key, str) or not key.strip():
        raise UserError("The storage key is empty; give the path of a file inside the bucket.")
    raw = key.strip()
    mangled = _MANGLED.match(raw)
    if mangled:
        raw = f"{mangled.group(1)}://{raw[mangled.end():]}"
    if raw.lower().startswith(("https://", "http://")):
        path = _https_object(key, raw, scheme, bucket)
        if prefix:
            if not path.startswith(prefix + "/"):
                raise UserError(f"The key '{_shown(key)}' points outside this worker's bucket prefix; give a key inside it.")
            path = path[len(prefix) + 1:]
        raw = path
    elif "://" in raw:
        parts = urlsplit(raw)
        if parts.scheme.lower() != scheme or (scheme != "file" and parts.netloc != bucket):
            raise _outside(key)
        if parts.query or parts.fragment:
            raise UserError(f"The key '{_shown(key)}' has a query or fragment; give a plain object key.")
        path = parts.path.lstrip("/") if scheme != "file" else parts.path
        if scheme == "file":
            root = "/" + bucket.strip("/")
            if not (path == root or path.startswith(root.rstrip("/") + "/")):
                raise _outside(key)
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
