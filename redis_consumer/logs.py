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

_RUN_END = re.compile(r"[\s\"']")  # signed URLs never cross whitespace or quotes
_HTTP = re.compile(r"https?://", re.IGNORECASE)
_SIGNATURE_WORD = re.compile(r"Signature|X-Amz-|X-Goog-|GoogleAccessId|Expires|sig=", re.IGNORECASE)
_USER_END = re.compile(r"[:/@\s]")
_PASSWORD_END = re.compile(r"[@\s]")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _redact_signed_queries(text: str) -> str:
    r"""`https://host/path?..Signature..` -> `https://host/path?<signature-redacted>`, in linear time.

    Same result as the regex `(https?://[^\s?"']+)\?[^\s"']*(?:Signature|...)[^\s"']*` -> `\1?<...>`,
    which backtracks quadratically on long hostile input. Within one run of characters free of
    whitespace and quotes only the first URL with a non-empty part before `?` can match (a later
    URL's query is a suffix of the first one's), so every run is looked at once.
    """
    out: list[str] = []
    pos = 0
    while (hit := _HTTP.search(text, pos)) is not None:
        stop = _RUN_END.search(text, hit.end())
        end = stop.start() if stop else len(text)
        while hit is not None and (hit.end() >= end or text[hit.end()] == "?"):
            hit = _HTTP.search(text, hit.end(), end)  # "http://?": the URL part may not be empty
        if hit is not None:
            q = text.find("?", hit.end(), end)
            if q != -1 and _SIGNATURE_WORD.search(text, q + 1, end):
                out.append(text[pos:q] + "?<signature-redacted>")
                pos = end
                continue
        out.append(text[pos:end])
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_url_passwords(text: str) -> str:
    r"""`scheme://user:password@` -> `scheme://user:***@`, in linear time.

    Same result as the regex `([a-zA-Z][a-zA-Z0-9+.-]*)://([^:/@\s]*):([^@\s]+)@`. Each `://` is
    tried once: its scheme is the run of scheme characters before it (which must hold a letter),
    the user ends at the first `:/@` or whitespace, the password at the first `@` or whitespace
    (that last search is shared between neighbouring `://`s, so hostile input stays linear).
    """
    out: list[str] = []
    done = 0
    cached_from, cached_at = -1, -1  # no '@' or whitespace in [cached_from, cached_at)
    anchor = text.find("://")
    while anchor != -1:
        resume = anchor + 3
        s = anchor
        letter = False
        while s > 0 and text[s - 1] in _SCHEME_CHARS:
            s -= 1
            letter = letter or text[s] in _LETTERS
        user_end = _USER_END.search(text, anchor + 3) if letter else None
        if user_end is not None and user_end.group() == ":":
            first = user_end.end()
            if not cached_from <= first <= cached_at:
                found = _PASSWORD_END.search(text, first)
                cached_from, cached_at = first, found.start() if found else len(text)
            at = cached_at
            if at > first and at < len(text) and text[at] == "@":
                out.append(text[done:first] + "***@")
                done = resume = at + 1
        anchor = text.find("://", resume)
    out.append(text[done:])
    return "".join(out)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove signed-URL query strings, URL passwords and the given secret values from text.

    Linear in the length of `text`, however hostile (a 200 KB job field once took minutes in a
    backtracking regex while holding the GIL).
    """
    if "://" in text:  # both redactions start at a URL's "://" (most log lines hold none)
        text = _redact_signed_queries(text)
        text = _redact_url_passwords(text)
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
