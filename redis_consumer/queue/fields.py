"""Job fields between Python and the Lua steps: flattening values for HSET, decoding HGETALL bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _flatten(fields: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    add = out.extend
    for name, value in fields.items():
        kind = type(value)
        if kind is str:  # most values: plain text as it is
            add((name, value))
        elif value is not None:
            add((name, f"{value:.6f}" if kind is float else _fmt(value)))
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return str(value)  # plain text, also for str-valued enums
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _decode_fields(flat: list[bytes]) -> tuple[dict[str, str], list[str]]:
    """HGETALL bytes -> text; the names of fields that are not UTF-8 come back separately."""
    try:  # all UTF-8 (the rule): one pass
        text = [raw.decode("utf-8") for raw in flat]
        return dict(zip(text[::2], text[1::2])), []
    except UnicodeDecodeError:
        pass
    data: dict[str, str] = {}
    bad: list[str] = []
    for raw_name, raw_value in zip(flat[::2], flat[1::2]):
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            name = raw_name.decode("utf-8", "backslashreplace")
            bad.append(name)
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("utf-8", "replace")
            if name not in bad:
                bad.append(name)
        data[name] = value
    return data, bad
