"""Dev-server models with the serving signatures of the DeepCell Kiosk's exported models.

Same model names, versions, input and output names, dtypes, shapes and head order as the models
the kiosk's TF Serving serves (facts and sources in ../shared/deepcell-models.md §0, §2-6 and §8;
kiosk-redis-consumer settings.py:94-136 for the names and versions), but the heads are synthetic,
computed from the image by `synthetic_heads` / `synthetic_tracking`, so the whole kiosk pipeline
runs without TensorFlow. Segmentation and spot models declare a fixed tile (the applications tile
with `model.input_shape[1:]`); -1 marks every other unknown dimension, as TF Serving reports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from . import synthetic_heads as heads
from . import synthetic_tracking as tracking
from .messages import ModelMetadata, TensorSpec
from .models import F32, Model, ModelInputError, SimulatedGPU

#: fixed tile of the served segmentation models (deepcell-tf crop_size 256; facts sheet §2, §4)
SEGMENTATION_TILE = 256
#: fixed tile of the spot model: [not determinable] from the sources; we serve 128 (facts sheet §5)
SPOT_TILE = 128
#: the spot model's input name: a default Keras Input name, [guess] (facts sheet §5, §8)
SPOT_INPUT = "input_1"
#: the neighbourhood encoder's outputs: sorted, the embedding is index 1 (kiosk embedding_axis=1)
NE_CENTROIDS, NE_EMBEDDING = "encoder_centroid_input", "relu_nef"
#: the inference model's single output: the name TF Serving would show is [not determinable]
INF_OUTPUT = "tracking_decoder"


Shapes = dict[str, tuple[int, ...]]


def _spec(*shape: int) -> TensorSpec:
    return TensorSpec(F32, tuple(shape))


class SignatureModel(Model):
    """A model defined by its signature: `inputs` / `outputs` name -> shape (all float32)."""

    inputs: ClassVar[Shapes] = {}
    outputs: ClassVar[Shapes] = {}
    summary = ""

    def __init__(self, name: str | None = None, version: int | None = None) -> None:
        super().__init__()
        if name is not None:
            self.name = name
        if version is not None:
            self.version = version
        #: a SimulatedGPU to hold for its time per batch after computing (benchmarks), or None
        self.gpu: SimulatedGPU | None = None

    @property
    def times_busy_itself(self) -> bool:  # with a GPU, busy time = time holding it
        return self.gpu is not None

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(self.name, self.version, {k: _spec(*v) for k, v in self.inputs.items()},
                             {k: _spec(*v) for k, v in self.outputs.items()})

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.compute(inputs)
        if self.gpu is not None:
            first = next(iter(inputs.values()))
            batch = int(first.shape[0]) if first.ndim else 1
            pixels = int(np.prod(first.shape[:3])) if first.ndim >= 3 else None  # per-pixel GPU cost
            held = self.gpu.occupy(batch, pixels=pixels)
            with self._stats_lock:
                self.busy_seconds += held
        return outputs


class PerTileModel(SignatureModel):
    """One input tile batch (B, T, T, C) -> per-tile heads, stacked in output-name order."""

    def tile_heads(self, tile: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (batch,) = inputs.values()
        batch = np.asarray(batch, F32)
        names = list(self.outputs)
        out = {k: np.zeros((batch.shape[0], *batch.shape[1:3], self.outputs[k][-1]), F32) for k in names}
        for i in range(batch.shape[0]):
            for k, head in zip(names, self.tile_heads(batch[i])):
                out[k][i] = head
        return out


class DeepCellSegmentation(PerTileModel):
    """Nuclear / cytoplasm / phase PanopticNet: `input_0` -> inner distance, outer distance."""

    phase = False
    inputs: ClassVar[Shapes] = {"input_0": (-1, SEGMENTATION_TILE, SEGMENTATION_TILE, 1)}
    outputs: ClassVar[Shapes] = {"semantic_0": (-1, SEGMENTATION_TILE, SEGMENTATION_TILE, 1),
               "semantic_1": (-1, SEGMENTATION_TILE, SEGMENTATION_TILE, 1)}
    summary = ("semantic_0 = inner distance (per-object normalised, peaks at centres), "
               "semantic_1 = outer distance (> 0 inside objects)")

    def __init__(self, name: str, version: int, *, phase: bool = False) -> None:
        super().__init__(name, version)
        self.phase = phase

    def tile_heads(self, tile: np.ndarray) -> list[np.ndarray]:
        return list(heads.nuclear_heads(tile[..., 0], phase=self.phase))


class Mesmer(PerTileModel):
    """MultiplexSegmentation: [nuclear, membrane] -> whole-cell and nuclear inner distance + pixelwise."""

    name, version = "MultiplexSegmentation", 9
    _t = SEGMENTATION_TILE
    inputs: ClassVar[Shapes] = {"input_0": (-1, _t, _t, 2)}
    outputs: ClassVar[Shapes] = {"semantic_0": (-1, _t, _t, 1), "semantic_1": (-1, _t, _t, 3),
               "semantic_2": (-1, _t, _t, 1), "semantic_3": (-1, _t, _t, 3)}
    summary = ("semantic_0/1 = whole-cell inner distance / [edge, interior, background], "
               "semantic_2/3 = the same for nuclei; cells = nuclei grown to membrane boundaries")

    def tile_heads(self, tile: np.ndarray) -> list[np.ndarray]:
        return heads.mesmer_heads(tile)


class SpotDetection(PerTileModel):
    """deepcell-spots dot_net_2D: `input_1` -> classification (P(spot) in ch 1), offset_regression."""

    name, version = "SpotDetection", 3
    inputs: ClassVar[Shapes] = {SPOT_INPUT: (-1, SPOT_TILE, SPOT_TILE, 1)}
    outputs: ClassVar[Shapes] = {"classification": (-1, SPOT_TILE, SPOT_TILE, 2),
               "offset_regression": (-1, SPOT_TILE, SPOT_TILE, 2)}
    summary = ("classification = [1-P, P(spot)] (0.99 at the pixel nearest each spot), "
               "offset_regression = (d-row, d-col) to the sub-pixel centre within 2 px")

    def tile_heads(self, tile: np.ndarray) -> list[np.ndarray]:
        return list(heads.spot_heads(tile[..., 0]))


class NeighborhoodEncoder(SignatureModel):
    """NuclearTrackingNE: per-frame cell features -> (centroid passthrough, 64-d embedding)."""

    name, version = "NuclearTrackingNE", 6
    inputs: ClassVar[Shapes] = {"encoder_app_input": (-1, -1, 32, 32, 1), "encoder_morph_input": (-1, -1, 3),
              "encoder_centroid_input": (-1, -1, 2), "encoder_adj_input": (-1, -1, -1)}
    outputs: ClassVar[Shapes] = {NE_CENTROIDS: (-1, -1, 2), NE_EMBEDDING: (-1, -1, tracking.EMBEDDING_DIM)}
    summary = f"{NE_CENTROIDS} = the centroids, {NE_EMBEDDING} = readable 64-d features (sorted index 1)"

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames_cells = {k: tuple(v.shape[:2]) for k, v in inputs.items()}
        adj = inputs["encoder_adj_input"].shape
        if len(set(frames_cells.values())) != 1 or adj[1] != adj[2]:
            raise ModelInputError("the encoder inputs disagree in frames or cells: "
                                  + ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items()))
        emb = tracking.encode(inputs["encoder_app_input"], inputs["encoder_morph_input"],
                              inputs["encoder_centroid_input"], inputs["encoder_adj_input"])
        return {NE_CENTROIDS: np.asarray(inputs["encoder_centroid_input"], F32).copy(), NE_EMBEDDING: emb}


class TrackingInference(SignatureModel):
    """NuclearTrackingInf: track history vs next-frame cells -> softmax [same, different, daughter]."""

    name, version = "NuclearTrackingInf", 6
    inputs: ClassVar[Shapes] = {"current_embeddings": (-1, -1, -1, tracking.EMBEDDING_DIM), "current_centroids": (-1, -1, -1, 2),
              "future_embeddings": (-1, 1, -1, tracking.EMBEDDING_DIM), "future_centroids": (-1, 1, -1, 2)}
    outputs: ClassVar[Shapes] = {INF_OUTPUT: (-1, 1, -1, -1, 3)}
    summary = f"{INF_OUTPUT} (B,1,tracks,cells,3) = [same, different, daughter] from distance, area, appearance"

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cur_e, cur_c = inputs["current_embeddings"], inputs["current_centroids"]
        fut_e, fut_c = inputs["future_embeddings"], inputs["future_centroids"]
        if cur_e.shape[:3] != cur_c.shape[:3] or fut_e.shape[:3] != fut_c.shape[:3] or cur_e.shape[0] != fut_e.shape[0]:
            raise ModelInputError("current/future embeddings and centroids disagree in batch, frames or cells: "
                                  f"{list(cur_e.shape)}, {list(cur_c.shape)}, {list(fut_e.shape)}, {list(fut_c.shape)}")
        return {INF_OUTPUT: tracking.score(cur_e, cur_c, fut_e, fut_c)}


class ScaleDetection(SignatureModel):
    """ScaleDetection:1: the kiosk asks for its metadata even with scale detection off (facts §8).

    Input and output names and the tile are [inferred]; it answers 1.0 (the image is at the
    model's mpp) for every tile, so `mean(model(tiles))` gives scale 1.
    """

    name, version = "ScaleDetection", 1
    inputs: ClassVar[Shapes] = {"input_0": (-1, SEGMENTATION_TILE, SEGMENTATION_TILE, 1)}
    outputs: ClassVar[Shapes] = {"scale": (-1, 1)}
    summary = "scale = 1.0 per tile"

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"scale": np.ones((inputs["input_0"].shape[0], 1), F32)}


FACTORIES: list[Callable[[], Model]] = [
    lambda: DeepCellSegmentation("NuclearSegmentation", 6),
    lambda: DeepCellSegmentation("CytoplasmSegmentation", 5),
    lambda: DeepCellSegmentation("PhaseCytoSegmentation", 0, phase=True),
    Mesmer,
    SpotDetection,
    NeighborhoodEncoder,
    TrackingInference,
    ScaleDetection,
    # the versions kiosk-console deploys (KCON conf/helmfile.d/0230:88-92, 0250:95-96, 0280:83), so
    # helm/environments/kiosk.yaml's model settings are served by the dev server too
    lambda: DeepCellSegmentation("NuclearSegmentation", 75),
    lambda: _versioned(NeighborhoodEncoder, 75),
    lambda: _versioned(TrackingInference, 75),
    lambda: _versioned(SpotDetection, 7),
]


def _versioned(cls: Callable[..., Model], version: int) -> Model:
    """Another served version of the same synthetic model."""
    return cls(version=version)


def deepcell_models(gpu: SimulatedGPU | None = None) -> list[Model]:
    """One fresh instance of every DeepCell-signature model, optionally sharing one SimulatedGPU."""
    models = [make() for make in FACTORIES]
    for m in models:
        m.gpu = gpu
    return models
