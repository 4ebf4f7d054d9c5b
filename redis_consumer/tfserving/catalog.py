"""The dev server's catalogue: every model `serve-model` serves without TensorFlow.

Its own module so `models` (the numpy references and SimulatedGPU) and `deepcell_models` (the
DeepCell serving signatures, built on `models`) need not import each other.
"""

from __future__ import annotations

from typing import Any

from .deepcell_models import deepcell_models
from .models import (
    DEFAULT_GPU_MS_PER_MPIXEL,
    F32,
    Identity,
    Model,
    NuclearSegmentation,
    SimulatedGPU,
)


def builtin_models(gpu_base: float = 0.004, gpu_per_sample: float = 0.0, gpu_tile: int = 256,
                   simulate_gpu: bool = False, gpu_per_mpixel: float = DEFAULT_GPU_MS_PER_MPIXEL / 1000.0,
                   gpu_dtype: Any = F32) -> list[Model]:
    """Everything `serve-model` serves without TensorFlow.

    The DeepCell-signature models (`deepcell_models`: NuclearSegmentation:6, MultiplexSegmentation:9,
    ...) come before the version-1 demo models, so a caller that keys this list by name alone
    still gets NuclearSegmentation:1 (the any-size `image` -> `probability` model). With
    `simulate_gpu` the DeepCell models also hold the SimulatedGPU for its time per batch.
    """
    gpu = SimulatedGPU(gpu_base, gpu_per_sample, gpu_tile, gpu_per_mpixel, gpu_dtype)
    return [Identity(), *deepcell_models(gpu if simulate_gpu else None), NuclearSegmentation(), gpu]
