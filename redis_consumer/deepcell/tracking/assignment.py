"""The per-frame linear assignment of deepcell-tracking 0.6.4's CellTracker.

Sources (vanvalenlab/deepcell-tracking@0.6.4, deepcell_tracking/tracking.py):
* `assignment_matrix`: 1 - p_same, capped tracks' rows set to 1 (L449-455).
* `cost_matrix`: `_build_cost_matrix` (L368-399): [[a, death block], [birth block, a.T]].
* `solve`: `linear_sum_assignment` on that matrix (L634-637).
* `find_parent`: `_get_parent` (L590-627).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment


def assignment_matrix(predictions: np.ndarray, capped: Sequence[bool]) -> np.ndarray:
    """(n_tracks, n_cells) cost of linking: 1 - p_same; rows of capped tracks are all 1, so a track
    that has divided is (almost) never continued."""
    a = 1 - np.asarray(predictions)[..., 0]
    a[np.asarray(capped, dtype=bool)] = 1
    return a


def cost_matrix(a: np.ndarray, birth: float, death: float, dtype: str = "float32") -> np.ndarray:
    """The (n_tracks + n_cells)^2 matrix: top-left `a`, top-right death on the diagonal (1 elsewhere),
    bottom-left birth on the diagonal (1 elsewhere), bottom-right `a.T`.

    The diagonal blocks are computed as the library does (birth * I + 1 - I in float64, then cast),
    so the float32 costs, and hence the solver's tie-breaking, are the same.
    """
    n_tracks, n_cells = a.shape
    cost = np.zeros((n_tracks + n_cells,) * 2, dtype=dtype)
    cost[:n_tracks, :n_cells] = a
    cost[n_tracks:, :n_cells] = np.diag([birth] * n_cells) + np.ones((n_cells, n_cells)) - np.eye(n_cells)
    cost[:n_tracks, n_cells:] = death * np.eye(n_tracks) + np.ones((n_tracks, n_tracks)) - np.eye(n_tracks)
    cost[n_tracks:, n_cells:] = a.T
    return cost


def solve(cost: np.ndarray) -> np.ndarray:
    """(K, 2) [row, col] pairs of the minimum-cost assignment, rows ascending.

    Row r < n_tracks with col c < n_cells links track r to cell c; a row >= n_tracks with
    c < n_cells is the birth of cell c; any col >= n_cells is a death or a shadow pair.
    """
    rows, cols = linear_sum_assignment(cost)
    return np.stack([rows, cols], axis=1)


def find_parent(
    cell_index: int,
    p_daughter: np.ndarray,
    capped: Sequence[bool],
    born_now: Sequence[bool],
    division: float,
) -> int | None:
    """Row of the track most likely to be the parent of a newly born cell, or None.

    Over uncapped tracks in row order (skipping a track whose only frame is this one, i.e. a
    sibling born this frame: L616-619), the largest `p_daughter[track, cell]` strictly above
    `division` wins; ties keep the first (L602-627). `p_daughter` is (n_tracks, n_cells).
    """
    parent, best = None, division
    for track in range(p_daughter.shape[0]):
        if capped[track] or born_now[track]:
            continue
        prob = p_daughter[track, cell_index]
        if prob > best:
            parent, best = track, prob
    return parent
