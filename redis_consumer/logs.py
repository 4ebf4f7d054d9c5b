"""Logging setup: one line per event, text or JSON, with secrets scrubbed.

A redaction filter replaces known secret values (passwords, keys) and the query string of any
signed URL before a record is written, so neither ever reaches a log line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable

_SIGNED_QUERY = re.compile(
    r"(https?://[^\s?\"']+)\?[^\s\"']*(?:Signature|X-Amz-|X-Goog-|GoogleAccessId|Expires|sig=)[^\s\"']*",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://([^:/@\s]*):([^@\s]+)@")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove signed-URL query strings, URL passwords and the given secret values from text."""
    text = _SIGNED_QUERY.sub(r"\1?<signature-redacted>", text)
    text = _URL_PASSWORD.sub(r"\1://\2:***@", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with `scrub` (applied on the handler, so nothing escapes)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            formatter = logging.Formatter()
            message = message + "\n" + formatter.formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = scrub(message, self.secrets)
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    _RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._RESERVED and not key.startswith("_"):
                payload[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        return json.dumps(payload, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable single-line text; newlines in messages are escaped to keep one line per event."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def configure(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = (), stream=None) -> None:
    """Install one handler on the root logger (idempotent)."""
    import logging as _logging

    handler = _logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root = _logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_redis_consumer", False):
            root.removeHandler(old)
    handler._redis_consumer = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "google", "s3transfer"):
        _logging.getLogger(noisy).setLevel(max(_logging.WARNING, root.level))
