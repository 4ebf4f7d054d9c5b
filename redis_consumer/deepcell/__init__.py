"""DeepCell-style application pipeline in numpy / scipy / scikit-image (no TensorFlow).

One reusable layer the segmentation and Mesmer consumers call: preprocessing, mpp rescale,
overlapping tiling and spline-blended untiling, deep watershed, and the application specs that
tie them together. Behaviour follows deepcell-tf 0.12 `Application` and deepcell-toolbox 0.12
(cited per function); nothing here talks to Redis, gRPC or a consumer.

Importing this package (or `apps`, the specs) imports neither scipy nor scikit-image: those
cost ~0.2 s and ~40 MB at worker start, and a segmentation worker whose first jobs take the
threshold path never needs most of them. The names below load on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Exported name -> the module that defines it.
_EXPORTS = {
    "APPLICATIONS": "apps",
    "AppSpec": "apps",
    "CytoplasmSegmentation": "apps",
    "Mesmer": "apps",
    "NuclearSegmentation": "apps",
    "run_application": "pipeline",
    "deep_watershed": "watershed",
}

__all__ = ["APPLICATIONS", "AppSpec", "CytoplasmSegmentation", "Mesmer", "NuclearSegmentation", "deep_watershed",
           "run_application"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
