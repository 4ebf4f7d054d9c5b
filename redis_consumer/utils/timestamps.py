"""Timestamps as the job protocol writes them: ISO-8601, UTC, microseconds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

#: (unix second, its "YYYY-MM-DDTHH:MM:SS"): `now_iso` formats the date part once a second.
_SECOND: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """Current time, e.g. `2026-11-21T21:30:00.123456+00:00` (what `datetime.isoformat` writes
    with microseconds; the worker stamps several per job, so the date part is made once a second)."""
    global _SECOND
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{fraction:06d}+00:00"


def parse_iso(text: str) -> datetime:
    """Parse a timestamp written by `now_iso` (or the kiosk); naive values are taken as UTC."""
    value = datetime.fromisoformat(text.strip())  # 3.11+ also reads a trailing "Z"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def age_seconds(text: str | None, now: float | None = None) -> float | None:
    """Seconds from the timestamp `text` to `now` (unix seconds; default the local clock), never
    negative; None when `text` is empty or not a timestamp."""
    if not text:
        return None
    try:
        stamp = parse_iso(text).timestamp()
    except ValueError:
        return None
    return max(0.0, (time.time() if now is None else now) - stamp)
