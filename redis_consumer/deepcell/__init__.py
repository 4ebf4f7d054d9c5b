"""DeepCell-style application pipeline in numpy / scipy / scikit-image (no TensorFlow).

One reusable layer the segmentation and Mesmer consumers call: preprocessing, mpp rescale,
overlapping tiling and spline-blended untiling, deep watershed, and the application specs that
tie them together. Behaviour follows deepcell-tf 0.12 `Application` and deepcell-toolbox 0.12
(cited per function); nothing here talks to Redis, gRPC or a consumer.
"""

from redis_consumer.deepcell.apps import (
    APPLICATIONS,
    AppSpec,
    CytoplasmSegmentation,
    Mesmer,
    NuclearSegmentation,
)
from redis_consumer.deepcell.pipeline import run_application
from redis_consumer.deepcell.watershed import deep_watershed

__all__ = [
    "APPLICATIONS",
    "AppSpec",
    "CytoplasmSegmentation",
    "Mesmer",
    "NuclearSegmentation",
    "deep_watershed",
    "run_application",
]
