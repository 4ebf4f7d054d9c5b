"""deepcell-tracking 0.6.4's `CellTracker` flow, with the two models passed in as callables.

`track_cells(X, y, encode, infer, ...)` follows vanvalenlab/deepcell-tracking@0.6.4
deepcell_tracking/tracking.py (line numbers below are that file's):
  clean up labels (L146) -> features (L197-243) -> embeddings from the neighbourhood encoder,
  picking output `embedding_axis` when it returns several (L245-260) -> tracks from frame 0
  (L318-330) -> for each later frame: the last `track_length` frames of every track, a short track
  repeating its last frame (L332-366), inference -> cost matrix -> `linear_sum_assignment`
  (L401-469, L629-641) -> links, births with the parent search, then the division bookkeeping
  (L471-588) -> the review dict (L656-673).
The kiosk runs this through deepcell-tf's `CellTracking.predict` (deepcell/applications/
cell_tracking.py:148-177 at 0.12.6), with the parameters of `KIOSK_TRACKING_DEFAULTS`.

Instead of relabelling `y` in place after every link (L510-543, L579-583), each frame records
which track each of its cells went to and the tracked frame is drawn once from that; the labels
come out the same because the cleaned ids (>= total cells + 1) never collide with track labels.

Where the library raises (np.stack of nothing), an empty frame here simply has no cells, and a
frame whose predecessors were all empty starts every one of its cells as a new track.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from redis_consumer.deepcell.tracking.assignment import (
    assignment_matrix,
    cost_matrix,
    find_parent,
    solve,
)
from redis_consumer.deepcell.tracking.features import (
    MovieFeatures,
    clean_up_annotations,
    movie_features,
)

Encoder = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]
Inference = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]

# What kiosk-redis-consumer passes (KRC redis_consumer/settings.py:94-107 and
# consumers/caliban_consumer.py:230-245). kiosk-console deploys distance 60 and division 0.01
# (kiosk-console conf/helmfile.d/0250.caliban-consumer.yaml:95-105).
KIOSK_TRACKING_DEFAULTS: dict[str, Any] = {
    "distance_threshold": 50,
    "appearance_dim": 32,
    "birth": 0.99,
    "death": 0.99,
    "division": 0.9,
    "track_length": 8,
    "embedding_axis": 1,
    "crop_mode": "resize",
    "norm": True,
}


@dataclass
class _Track:
    frames: list[int]
    rows: list[int]  # the cell's row in its frame's feature arrays, one per frame
    parent: int | None = None
    daughters: list[int] = field(default_factory=list)
    capped: bool = False
    frame_div: int | None = None


@dataclass
class TrackingResult:
    """`tracks` is the lineage {label: {label, frames, daughters, capped, frame_div, parent}} with
    labels (track id + 1) for daughters and parent, as `_track_review_dict` gives it (L656-673);
    `y_tracked` is int32 (T, H, W) in those labels."""

    tracks: dict[int, dict[str, Any]]
    y_tracked: np.ndarray


def embed(
    features: MovieFeatures, encode: Encoder, embedding_axis: int = 0, batch_frames: int | None = None
) -> np.ndarray:
    """(T, M, E) float32 embeddings of every cell, calling `encode(app, morph, centroid, adj)` on
    `batch_frames` frames at a time (all at once when None; the kiosk's gRPC wrapper uses 64)."""
    n_frames, max_cells = features.centroids.shape[:2]
    if max_cells == 0:
        return np.zeros((n_frames, 0, 0), dtype=np.float32)
    step = batch_frames or n_frames
    parts = []
    for start in range(0, n_frames, step):
        window = slice(start, start + step)
        out = encode(
            features.appearances[window],
            features.morphologies[window],
            features.centroids[window],
            features.adjacency[window],
        )
        if isinstance(out, (list, tuple)):
            out = out[embedding_axis]
        out = np.asarray(out, dtype=np.float32)
        frames_in = min(step, n_frames - start)
        if out.ndim != 3 or out.shape[:2] != (frames_in, max_cells):
            raise ValueError(
                f"the neighbourhood encoder returned shape {out.shape}, expected ({frames_in}, {max_cells}, E)"
            )
        parts.append(out)
    return np.concatenate(parts, axis=0)


def _history(tracks: list[_Track], values: np.ndarray, track_length: int) -> np.ndarray:
    """(1, L, n_tracks, ...) of each track's last L entries, padded by repeating its last one."""
    stacked = []
    for track in tracks:
        frames, rows = track.frames[-track_length:], track.rows[-track_length:]
        missing = track_length - len(frames)
        frames, rows = frames + [frames[-1]] * missing, rows + [rows[-1]] * missing
        stacked.append(values[frames, rows])
    return np.stack(stacked, axis=1)[None]


def track_cells(
    X: np.ndarray,
    y: np.ndarray,
    encode: Encoder,
    infer: Inference,
    *,
    distance_threshold: float = 64,
    appearance_dim: int = 32,
    birth: float = 0.99,
    death: float = 0.99,
    division: float = 0.9,
    track_length: int = 5,
    embedding_axis: int = 0,
    crop_mode: str = "resize",
    norm: bool = True,
    norm_epsilon: float = 0.0,
    encoder_batch_frames: int | None = None,
) -> TrackingResult:
    """Track the labelled cells of a movie: X (T, H, W[, C]) raw frames, y (T, H, W[, 1]) labels.

    `encode(app (F,M,A,A,C), morph (F,M,3), centroid (F,M,2), adj (F,M,M))` returns the (F, M, E)
    embeddings, or a sequence of outputs of which `embedding_axis` is the embedding.
    `infer(current_embeddings (1,L,n_tracks,E), current_centroids (1,L,n_tracks,2),
    future_embeddings (1,1,n_cells,E), future_centroids (1,1,n_cells,2))` returns
    (1, 1, n_tracks, n_cells, 3) probabilities [same, different, daughter] (or a one-item list of it).
    Keyword defaults are the library's `CellTracker` ones (L87-102); see KIOSK_TRACKING_DEFAULTS.
    """
    labels = clean_up_annotations(y)
    labels = labels[..., 0] if labels.ndim == 4 else labels
    features = movie_features(X, labels, appearance_dim, crop_mode, norm, distance_threshold, norm_epsilon)
    embeddings = embed(features, encode, embedding_axis, encoder_batch_frames)
    centroids = features.centroids
    n_frames = labels.shape[0]

    tracks: list[_Track] = []
    owner: list[np.ndarray] = []  # per frame: track id of each cell row
    for t in range(n_frames):
        n_cells = len(features.labels[t])
        assigned = np.full(n_cells, -1, dtype=np.int64)
        owner.append(assigned)
        if n_cells == 0:
            continue
        n_tracks = len(tracks)
        if t == 0 or n_tracks == 0:  # _initialize_tracks (L318-330), or nothing to link to
            for row in range(n_cells):
                assigned[row] = len(tracks)
                tracks.append(_Track([t], [row]))
            continue
        predictions = infer(
            _history(tracks, embeddings, track_length),
            _history(tracks, centroids, track_length),
            embeddings[t, :n_cells][None, None],
            centroids[t, :n_cells][None, None],
        )
        if isinstance(predictions, (list, tuple)) and len(predictions) == 1:
            predictions = predictions[0]  # a served model's single output, as a list
        predictions = np.asarray(predictions)
        if predictions.shape != (1, 1, n_tracks, n_cells, 3):
            raise ValueError(
                f"the tracking model returned shape {predictions.shape}, expected (1, 1, {n_tracks}, {n_cells}, 3)"
            )
        predictions = predictions[0, 0]
        capped = [track.capped for track in tracks]
        born_now = [track.frames == [t] for track in tracks]  # L618: never true for older tracks
        pairs = solve(cost_matrix(assignment_matrix(predictions, capped), birth, death))
        for row, col in pairs:
            if col >= n_cells:
                continue  # death or shadow pair (L497-502)
            if row < n_tracks:  # the library's `track in self.tracks` (L510): birth rows never are
                tracks[row].frames.append(t)
                tracks[row].rows.append(int(col))
                assigned[col] = row
                continue
            new_id = len(tracks)  # birth (L526-543)
            tracks.append(_Track([t], [int(col)]))
            assigned[col] = new_id
            parent = find_parent(int(col), predictions[..., 2], capped, born_now, division)
            if parent is not None:
                tracks[new_id].parent = parent
                tracks[parent].daughters.append(new_id)
        for track_id in range(len(tracks)):  # division bookkeeping (L545-583)
            track = tracks[track_id]
            if not track.daughters:
                continue
            if not track.capped:
                track.frame_div, track.capped = t, True
            if t not in track.frames:
                continue
            k = track.frames.index(t)
            row = track.rows[k]
            del track.frames[k], track.rows[k]
            new_id = len(tracks)
            tracks.append(_Track([t], [row], parent=track_id))
            track.daughters.append(new_id)
            assigned[row] = new_id

    y_tracked = np.zeros(labels.shape, dtype=np.int32)
    for t in range(n_frames):
        if len(owner[t]) == 0:
            continue
        lut = np.concatenate([[0], owner[t] + 1]).astype(np.int32)
        frame = labels[t]
        index = np.searchsorted(features.labels[t], frame) + 1
        y_tracked[t] = np.where(frame > 0, lut[np.minimum(index, len(lut) - 1)], 0)
    return TrackingResult(lineage(tracks), y_tracked)


def lineage(tracks: Sequence[_Track]) -> dict[int, dict[str, Any]]:
    """The review dict's `tracks` (L656-673): keyed by label, ids turned into labels (+1)."""
    return {
        i + 1: {
            "label": i + 1,
            "frames": [int(f) for f in track.frames],
            "daughters": [d + 1 for d in track.daughters],
            "capped": bool(track.capped),
            "frame_div": None if track.frame_div is None else int(track.frame_div),
            "parent": None if track.parent is None else track.parent + 1,
        }
        for i, track in enumerate(tracks)
    }
