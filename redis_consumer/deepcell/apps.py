"""The DeepCell applications as data: resolution, preprocessing, padding, head layout, kwargs.

Values from deepcell-tf 0.12 (checked at f1839a4e): NuclearSegmentation
`deepcell/applications/nuclear_segmentation.py:54-77,110-135,176-` (model_mpp 0.65,
histogram_normalization, pad 'reflect', radius 10, maxima 0.1, interior 0.01, no border
exclusion, no small-object removal; interior_smooth stays at deep_watershed's default 1),
CytoplasmSegmentation `cytoplasm_segmentation.py` (the same numbers), Mesmer `mesmer.py:48-97`
(preprocess, head formatting) and L224-291 (model_mpp 0.5, pad 'constant', per-compartment
kwargs; 'both' = whole-cell then nuclear).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_COMPARTMENT_GROUPS = {"both": ("whole-cell", "nuclear")}


# The specs name their steps through these two wrappers, and the parameter names are read from
# deep_watershed's signature on first need, so importing the specs imports neither scikit-image
# (preprocess) nor scipy (watershed): a worker loads them with its first application run.
def histogram_normalization(image: np.ndarray, **kwargs: Any) -> np.ndarray:
    """`preprocess.histogram_normalization`, imported on first call."""
    from redis_consumer.deepcell.preprocess import histogram_normalization as run

    return run(image, **kwargs)


def mesmer_preprocess(image: np.ndarray, **kwargs: Any) -> np.ndarray:
    """`preprocess.mesmer_preprocess`, imported on first call."""
    from redis_consumer.deepcell.preprocess import mesmer_preprocess as run

    return run(image, **kwargs)


@functools.cache
def postprocess_parameters() -> frozenset[str]:
    """The keyword parameters of `deep_watershed` an override may set."""
    from redis_consumer.deepcell.watershed import deep_watershed

    return frozenset(name for name in inspect.signature(deep_watershed).parameters
                     if name not in {"outputs", "deprecated"})


def __getattr__(name: str) -> Any:
    if name == "POSTPROCESS_PARAMETERS":  # the former module constant, still importable
        return postprocess_parameters()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _all_heads(heads: Sequence[np.ndarray]) -> dict[str, list[np.ndarray]]:
    return {"cell": list(heads)}


def format_mesmer(heads: Sequence[np.ndarray | None]) -> dict[str, list[np.ndarray]]:
    """[whole-cell inner distance, whole-cell pixelwise, nuclear inner, nuclear pixelwise] ->
    per compartment [maxima, interior], the interior being pixelwise channel 1. A compartment
    whose heads were not asked for (None, see AppSpec.compartment_heads) is left out."""
    if len(heads) != 4:
        raise ValueError(f"Mesmer expects 4 model outputs, got {len(heads)}")
    pairs = {"whole-cell": (heads[0], heads[1]), "nuclear": (heads[2], heads[3])}
    return {c: [maxima, pixelwise[..., 1:2]] for c, (maxima, pixelwise) in pairs.items()
            if maxima is not None and pixelwise is not None}


@dataclass(frozen=True)
class AppSpec:
    """One application: how to prepare its input and turn its heads into labels."""

    name: str
    model_mpp: float
    channels: int
    preprocess: Callable[..., np.ndarray]
    pad_mode: str
    format_heads: Callable[[Sequence[np.ndarray]], dict[str, list[np.ndarray]]]
    postprocess: Mapping[str, Mapping[str, Any]]      # compartment -> deep_watershed kwargs
    default_compartment: str
    preprocess_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: compartment -> the heads (model order) its labels are made from; empty: all, always
    compartment_heads: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    #: whether `preprocess` gives a uint16 image the result of its float32 cast (the kiosk casts
    #: every input), so an image the pipeline does not resize is handed over uncast
    takes_uint16: bool = False

    @property
    def compartments(self) -> tuple[str, ...]:
        return tuple(self.postprocess)

    def select(self, compartment: str | None) -> tuple[str, ...]:
        """The compartments to label, in output channel order."""
        name = compartment or self.default_compartment
        chosen = _COMPARTMENT_GROUPS.get(name, (name,))
        if any(c not in self.postprocess for c in chosen):
            valid = list(self.postprocess) + [g for g, cs in _COMPARTMENT_GROUPS.items()
                                              if all(c in self.postprocess for c in cs)]
            raise ValueError(f"{self.name} compartment must be one of {valid}, got {name!r}")
        return chosen

    def heads_needed(self, compartments: Sequence[str]) -> tuple[int, ...] | None:
        """The heads labelling `compartments` reads when that is fewer than all of them (the
        request can then ask for just those: PredictRequest.output_filter), else None."""
        if not self.compartment_heads:
            return None
        needed = sorted({i for c in compartments for i in self.compartment_heads[c]})
        every = sorted({i for heads in self.compartment_heads.values() for i in heads})
        return tuple(needed) if needed != every else None

    def postprocess_kwargs(self, compartment: str, overrides: Mapping[str, Any] | None = None) -> dict:
        """Defaults for one compartment with `overrides` applied.

        `overrides` maps parameter -> value (all compartments) and/or compartment -> {parameter:
        value}; unknown names are rejected.
        """
        kwargs = dict(self.postprocess[compartment])
        for key, value in (overrides or {}).items():
            if key in self.postprocess:
                if not isinstance(value, Mapping):
                    raise ValueError(f"overrides for compartment {key!r} must be a mapping")
                for k in value:
                    _check_parameter(k)
                if key == compartment:
                    kwargs.update(value)
            else:
                _check_parameter(key)
                kwargs[key] = value
        return kwargs


def _check_parameter(name: str) -> None:
    known = postprocess_parameters()
    if name not in known:
        raise ValueError(f"unknown postprocess parameter {name!r}; known: {sorted(known)}")


_SEGMENTATION_KWARGS = {
    "radius": 10, "maxima_threshold": 0.1, "interior_threshold": 0.01, "exclude_border": False,
    "small_objects_threshold": 0, "maxima_index": 0, "interior_index": -1,
}
_MESMER_WHOLE_CELL = {
    "maxima_threshold": 0.075, "maxima_smooth": 0, "interior_threshold": 0.2, "interior_smooth": 2,
    "small_objects_threshold": 15, "fill_holes_threshold": 15, "radius": 2,
}
_MESMER_NUCLEAR = {**_MESMER_WHOLE_CELL, "maxima_threshold": 0.1}

NuclearSegmentation = AppSpec(
    name="NuclearSegmentation", model_mpp=0.65, channels=1, preprocess=histogram_normalization,
    pad_mode="reflect", format_heads=_all_heads, postprocess={"cell": _SEGMENTATION_KWARGS},
    default_compartment="cell", takes_uint16=True,
)
CytoplasmSegmentation = AppSpec(
    name="CytoplasmSegmentation", model_mpp=0.65, channels=1, preprocess=histogram_normalization,
    pad_mode="reflect", format_heads=_all_heads, postprocess={"cell": _SEGMENTATION_KWARGS},
    default_compartment="cell", takes_uint16=True,
)
Mesmer = AppSpec(
    name="Mesmer", model_mpp=0.5, channels=2, preprocess=mesmer_preprocess, pad_mode="constant",
    format_heads=format_mesmer,
    postprocess={"whole-cell": _MESMER_WHOLE_CELL, "nuclear": _MESMER_NUCLEAR},
    default_compartment="whole-cell",
    # deepcell-tf mesmer.py:74-96 (format_output_mesmer: whole-cell = heads 0-1, nuclear = heads
    # 2-3) and L99-157 (mesmer_postprocess labels a compartment from its own pair only): a
    # one-compartment job needs half the reply (26 of 52 MB for 1024x1024)
    compartment_heads={"whole-cell": (0, 1), "nuclear": (2, 3)}, takes_uint16=True,
)

APPLICATIONS: dict[str, AppSpec] = {
    spec.name: spec for spec in (NuclearSegmentation, CytoplasmSegmentation, Mesmer)
}

