"""Lean TensorFlow Serving client (no TensorFlow import), tensor codec, tiling and dev model server.

Importing this package is free: names below load their module (and grpc) on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "get_client": "client",
    "TFServingClient": "client",
    "CALL_OBSERVERS": "client",
    "ModelMetadata": "messages",
    "TensorSpec": "messages",
    "predict_tiled": "tiling",
}

__all__ = ["CALL_OBSERVERS", "ModelMetadata", "TFServingClient", "TensorSpec", "get_client", "predict_tiled"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
