"""Bucket storage behind one interface: S3 (`s3://`), GCS (`gs://`) and local folders (`file:///`).

`get_client(url)` parses the bucket URL once, imports only the backend its scheme needs (botocore for
S3, google-cloud-storage for GCS: importing this package imports neither, keeping worker start
fast) and keeps one client per URL and settings per process (rebuilt after a fork, since HTTP
connection pools must not be shared between processes).
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..settings import Settings
from .base import StorageAccessError, StorageClient
from .keys import confine, output_key

__all__ = ["StorageAccessError", "StorageClient", "check_public_access", "confine", "get_client", "output_key",
           "parse_url"]

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_USAGE = "STORAGE_BUCKET must be a bucket URL like s3://bucket[/prefix], gs://bucket[/prefix] or file:///dir"
_CACHE: dict[tuple, StorageClient] = {}
_LOCK = threading.Lock()


def parse_url(url: str) -> tuple[str, str, str]:
    """Split a bucket URL into (scheme, bucket, prefix); for `file://` the bucket is the directory.

    Raises `ConfigError` for an unknown scheme or a malformed URL (never echoing a password).
    """
    text = (url or "").strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ConfigError(f"{_USAGE}, got a malformed URL") from None
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:
        raise ConfigError(f"{_USAGE}; credentials do not belong in the URL (use AWS_* or GOOGLE_* settings)")
    if parts.query or parts.fragment:
        raise ConfigError(f"{_USAGE}, got {text!r} with a query or fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"{_USAGE}: file URLs need an absolute path (file:///dir), got {text!r}")
        path = os.path.normpath(unquote(parts.path))
        if not path.startswith("/") or path == "/":
            raise ConfigError(f"{_USAGE}: file URLs need an absolute directory other than /, got {text!r}")
        return "file", path, ""
    if scheme not in ("s3", "gs"):
        shown = scheme or "none"
        raise ConfigError(f"{_USAGE}; the scheme {shown!r} is not supported")
    bucket = parts.netloc
    if not _BUCKET_NAME.match(bucket) or ".." in bucket or (scheme == "s3" and len(bucket) > 63):
        raise ConfigError(f"{_USAGE}, got {text!r} whose bucket name is not valid")
    prefix = parts.path.removeprefix("/")
    prefix = prefix.removesuffix("/")
    segments = prefix.split("/") if prefix else []
    if any(s in ("", ".", "..") for s in segments) or "\\" in prefix:
        raise ConfigError(f"{_USAGE}, got {text!r} whose prefix has empty, '.' or '..' segments")
    return scheme, bucket, prefix


def get_client(url: str, settings: Settings | None = None) -> StorageClient:
    """The process's client for the bucket URL (created on first use, then reused)."""
    settings = settings or Settings.from_env()
    scheme, bucket, prefix = parse_url(url)
    try:
        cache_key: tuple = (os.getpid(), url, settings, hash(settings))
    except TypeError:  # a list slipped into an override: cache by identity instead
        cache_key = (os.getpid(), url, id(settings), None)
    with _LOCK:
        client = _CACHE.get(cache_key)
        if client is None:
            for stale in [k for k in _CACHE if k[0] != os.getpid()]:
                del _CACHE[stale]  # inherited through fork: leave the parent's pools alone
            client = _build(scheme, bucket, prefix, url.strip(), settings)
            _CACHE[cache_key] = client
        return client


def check_public_access(settings: Settings) -> str | None:
    """Call once at worker start: in OUTPUT_URL_MODE=public, log in one line (and return) why the
    bucket will not serve public result URLs, e.g. uniform bucket-level access; None otherwise.

    Never raises: a bucket that cannot be asked is left to fail (or not) on the first job.
    """
    if settings.OUTPUT_URL_MODE != "public":
        return None
    try:
        return get_client(settings.STORAGE_BUCKET, settings).check_public_access()
    except Exception:  # noqa: BLE001 - a start-up hint must never stop the worker
        return None


def _build(scheme: str, bucket: str, prefix: str, url: str, settings: Settings) -> StorageClient:
    if scheme == "s3":
        from .s3 import S3Client

        return S3Client(url, bucket, prefix, settings)
    if scheme == "gs":
        from .gcs import GCSClient

        return GCSClient(url, bucket, prefix, settings)
    from .local import LocalClient

    return LocalClient(url, bucket, settings)
