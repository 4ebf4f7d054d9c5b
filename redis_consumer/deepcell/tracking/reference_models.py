"""Hand-made numpy stand-ins for the two tracking models, with the served models' signatures.

Not trained, not DeepCell's: they make the tracker and the dev model server produce meaningful
lineages on synthetic movies (drifting nuclei that divide or leave the field).

* `neighborhood_encoder(app, morph, centroid, adj)` takes the NuclearTrackingNE inputs
  (`encoder_app_input` (F,M,A,A,C), `encoder_morph_input` (F,M,3), `encoder_centroid_input`
  (F,M,2), `encoder_adj_input` (F,M,M); deepcell-tracking@0.6.4 tracking.py:245-260) and returns
  (F, M, 64) float32 embeddings. `neighborhood_encoder_outputs` wraps it as a served model's
  output dict whose sorted names put the embedding second, as the kiosk expects
  (KRC consumers/caliban_consumer.py:243, embedding_axis=1).
* `inference(current_embeddings, current_centroids, future_embeddings, future_centroids)` takes
  the NuclearTrackingInf inputs ((1,L,n_tracks,64), (1,L,n_tracks,2), (1,1,n_cells,64),
  (1,1,n_cells,2); tracking.py:401-449) and returns (1, 1, n_tracks, n_cells, 3) float32
  probabilities [same, different, daughter].

Embedding layout (the rest is zero; padded rows, area 0, are all zero):
  0 log(1 + area), 1 perimeter / circle perimeter of that area, 2 eccentricity,
  3-18 the 4x4 block means of the (channel-mean) appearance, z-scored over the 16 blocks / 4,
  19-20 appearance mean and std, 21-23 adjacency-weighted sum of the rows' 0-2, 24 adjacency row sum.
"""

from __future__ import annotations

import numpy as np

EMBEDDING_DIM = 64
GRID = 4
_APP = slice(3, 3 + GRID * GRID)


def _block_means(app: np.ndarray) -> np.ndarray:
    """(F, M, 16) block means of the channel-mean appearance crops (any A)."""
    frames, cells, height, width = app.shape[:4]
    plane = app.reshape(frames * cells, height, width, -1).mean(axis=-1)
    rows = (np.arange(height) * GRID) // max(height, 1)
    cols = (np.arange(width) * GRID) // max(width, 1)
    block = (rows[:, None] * GRID + cols[None, :]).ravel()
    onehot = np.zeros((height * width, GRID * GRID), dtype=np.float32)
    onehot[np.arange(height * width), block] = 1
    counts = np.maximum(onehot.sum(axis=0), 1)
    means = plane.reshape(frames * cells, -1) @ onehot / counts
    return means.reshape(frames, cells, GRID * GRID)


def neighborhood_encoder(app: np.ndarray, morph: np.ndarray, centroid: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """(F, M, 64) float32 embeddings from appearance, morphology and the neighbourhood graph.
    `centroid` is accepted for the signature; positions enter through `inference`'s centroids."""
    app = np.nan_to_num(np.asarray(app, dtype=np.float32))
    morph = np.asarray(morph, dtype=np.float32)
    adj = np.asarray(adj, dtype=np.float32)
    frames, cells = morph.shape[:2]
    out = np.zeros((frames, cells, EMBEDDING_DIM), dtype=np.float32)
    area = morph[..., 0]
    present = area > 0
    out[..., 0] = np.log1p(np.maximum(area, 0))
    circle = 2 * np.sqrt(np.pi * np.maximum(area, 1e-6))
    out[..., 1] = np.where(present, morph[..., 1] / circle, 0)
    out[..., 2] = morph[..., 2]
    blocks = _block_means(app)
    centred = blocks - blocks.mean(axis=-1, keepdims=True)
    scale = np.sqrt((centred**2).mean(axis=-1, keepdims=True))
    out[..., _APP] = np.where(scale > 1e-6, centred / np.maximum(scale, 1e-6) / GRID, 0)
    flat = app.reshape(frames, cells, -1)
    out[..., 19] = flat.mean(axis=-1)
    out[..., 20] = flat.std(axis=-1)
    out[..., 21:24] = adj @ out[..., 0:3]
    out[..., 24] = adj.sum(axis=-1)
    out[~present] = 0
    return out


def neighborhood_encoder_outputs(
    app: np.ndarray, morph: np.ndarray, centroid: np.ndarray, adj: np.ndarray
) -> dict[str, np.ndarray]:
    """Served-model outputs: {'encoder_centroid_input': centroid copy, 'relu_nef': embedding};
    sorted by name the embedding is index 1 (deepcell-models.md §6.3, §8)."""
    return {
        "encoder_centroid_input": np.asarray(centroid, dtype=np.float32),
        "relu_nef": neighborhood_encoder(app, morph, centroid, adj),
    }


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def inference(
    current_embeddings: np.ndarray,
    current_centroids: np.ndarray,
    future_embeddings: np.ndarray,
    future_centroids: np.ndarray,
    distance_scale: float = 6.0,
    daughter_scale: float = 12.0,
    log_area_scale: float = 0.4,
) -> np.ndarray:
    """(1, 1, n_tracks, n_cells, 3) [same, different, daughter] from positions and embeddings.

    same: the cell is near where the track is heading (last centroid + last step), has about the
    track's area and a similar appearance grid. daughter: the cell is near the track's last
    position with about half its area AND another such cell is there too (two halves of a parent
    that then stops), the more so the less the track has a clear continuation. different: the rest.
    """
    cur_e = np.asarray(current_embeddings, dtype=np.float64)[0]
    cur_c = np.asarray(current_centroids, dtype=np.float64)[0]
    fut_e = np.asarray(future_embeddings, dtype=np.float64)[0, -1]
    fut_c = np.asarray(future_centroids, dtype=np.float64)[0, -1]
    n_tracks, n_cells = cur_c.shape[1], fut_c.shape[0]
    if n_tracks == 0 or n_cells == 0:
        return np.zeros((1, 1, n_tracks, n_cells, 3), dtype=np.float32)
    last = cur_c[-1]
    previous = cur_c[-2] if cur_c.shape[0] > 1 else last
    heading = last + (last - previous)
    d_same = np.linalg.norm(heading[:, None, :] - fut_c[None, :, :], axis=-1)
    d_parent = np.linalg.norm(last[:, None, :] - fut_c[None, :, :], axis=-1)
    track_area = np.expm1(cur_e[-1, :, 0])
    cell_area = np.expm1(fut_e[:, 0])
    log_ratio = np.log(np.maximum(cell_area[None, :], 1e-6) / np.maximum(track_area[:, None], 1e-6))
    a, b = cur_e[-1, :, _APP], fut_e[:, _APP]
    norms = np.linalg.norm(a, axis=-1)[:, None] * np.linalg.norm(b, axis=-1)[None, :]
    cosine = np.where(norms > 0, (a @ b.T) / np.maximum(norms, 1e-12), 0)

    same = _gauss(d_same, distance_scale) * _gauss(log_ratio, log_area_scale) * (0.75 + 0.25 * np.clip(cosine, 0, 1))
    half = _gauss(d_parent, daughter_scale) * _gauss(log_ratio - np.log(0.5), log_area_scale)
    if n_cells > 1:
        top2 = np.sort(half, axis=1)[:, -2:]  # best and second-best half per track
        sibling = np.where(half >= top2[:, 1:2], top2[:, 0:1], top2[:, 1:2])
    else:
        sibling = np.zeros_like(half)
    daughter = np.sqrt(half * sibling) * (1 - 0.9 * same.max(axis=1, keepdims=True))
    same = same * (1 - daughter)
    different = 0.05 * (1 - np.maximum(same, daughter)) + 1e-6
    probs = np.stack([same, different, daughter], axis=-1)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs[None, None].astype(np.float32)
