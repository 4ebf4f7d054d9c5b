"""Synthetic stand-ins for the tracking models (neighbourhood encoder and inference).

The neighbourhood encoder's embedding carries readable features instead of learned ones, so the
inference stand-in can score track-to-cell pairs from them:

| embedding slots | content (all >= 0, like the real ReLU output `relu_nef`) |
|---|---|
| 0-1 | centroid (row, col) |
| 2-4 | morphology (area, perimeter, eccentricity) |
| 5-6 | appearance mean, split into its positive and negative parts |
| 7 | appearance standard deviation |
| 8-23 | appearance 4x4 block means, positive parts |
| 24-39 | appearance 4x4 block means, negative parts |
| 40-42 | adjacency-weighted mean of the neighbours' morphology |
| 43 | adjacency row sum (neighbourhood size) |
| 44-63 | zero |

Inference scores [same, different, daughter] with a softmax over three logits: "same" falls with
the distance from the track's predicted position (last centroid plus its last step) and with the
log area ratio and appearance change; "daughter" peaks for a cell about half the track's area,
about half a parent radius from it; "different" is a constant baseline.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
EMBEDDING_DIM = 64

#: logit weights of the inference stand-in (distances in pixels)
SAME_SIGMA = 8.0
DIFFERENT_LOGIT = -4.0
AREA_WEIGHT = 8.0
APPEARANCE_WEIGHT = 1.0


def encode(app: np.ndarray, morph: np.ndarray, centroid: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """(F,M,A,A,C), (F,M,3), (F,M,2), (F,M,M) -> embedding (F,M,64) float32."""
    app = np.asarray(app, F32)
    frames, cells = app.shape[:2]
    out = np.zeros((frames, cells, EMBEDDING_DIM), F32)
    if frames == 0 or cells == 0:
        return out
    out[..., 0:2] = centroid
    out[..., 2:5] = morph
    flat = app.reshape(frames, cells, -1)
    mean = flat.mean(axis=-1)
    out[..., 5] = np.maximum(mean, 0)
    out[..., 6] = np.maximum(-mean, 0)
    out[..., 7] = flat.std(axis=-1)
    side = app.shape[2]
    blocks = app[..., 0] if app.ndim == 5 else app
    if side >= 4 and side % 4 == 0:
        b = blocks.reshape(frames, cells, 4, side // 4, 4, side // 4).mean(axis=(3, 5)).reshape(frames, cells, 16)
        out[..., 8:24] = np.maximum(b, 0)
        out[..., 24:40] = np.maximum(-b, 0)
    adj = np.asarray(adj, F32)
    weight = adj.sum(axis=-1, keepdims=True)
    out[..., 40:43] = np.einsum("fmn,fnk->fmk", adj, np.asarray(morph, F32)) / np.maximum(weight, 1e-6)
    out[..., 43] = weight[..., 0]
    return np.maximum(out, 0).astype(F32)


def _log_area_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.log((np.maximum(a, 0) + 1.0) / (np.maximum(b, 0) + 1.0))


def score(current_emb: np.ndarray, current_cent: np.ndarray, future_emb: np.ndarray,
          future_cent: np.ndarray) -> np.ndarray:
    """(B,L,T,64), (B,L,T,2), (B,1,N,64), (B,1,N,2) -> (B,1,T,N,3) softmax [same, different, daughter]."""
    cur_c = np.asarray(current_cent, F32)
    last = cur_c[:, -1]  # (B,T,2): tracks repeat their last frame when shorter than L
    step = last - cur_c[:, -2] if cur_c.shape[1] > 1 else np.zeros_like(last)
    predicted = last + step
    fut_c = np.asarray(future_cent, F32)[:, 0]  # (B,N,2)
    dist = np.linalg.norm(predicted[:, :, None, :] - fut_c[:, None, :, :], axis=-1)  # (B,T,N)
    from_last = np.linalg.norm(last[:, :, None, :] - fut_c[:, None, :, :], axis=-1)
    cur_e = np.asarray(current_emb, F32)[:, -1]  # (B,T,64)
    fut_e = np.asarray(future_emb, F32)[:, 0]  # (B,N,64)
    area_t, area_c = cur_e[..., 2][:, :, None], fut_e[..., 2][:, None, :]
    ratio = _log_area_ratio(area_c, area_t)
    looks = np.abs((cur_e[..., 5] - cur_e[..., 6])[:, :, None] - (fut_e[..., 5] - fut_e[..., 6])[:, None, :])
    spread = np.maximum(cur_e[..., 7][:, :, None], 1e-3)
    same = -(dist / SAME_SIGMA) ** 2 - AREA_WEIGHT * ratio ** 2 - APPEARANCE_WEIGHT * (looks / spread) ** 2
    parent_radius = np.sqrt(np.maximum(area_t, 1.0) / np.pi)
    daughter = (-((from_last - 0.5 * parent_radius) / SAME_SIGMA) ** 2
                - AREA_WEIGHT * (ratio - np.log(0.5)) ** 2)
    different = np.full_like(same, DIFFERENT_LOGIT)
    logits = np.stack([same, different, daughter], axis=-1)
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=-1, keepdims=True))[:, None].astype(F32)
