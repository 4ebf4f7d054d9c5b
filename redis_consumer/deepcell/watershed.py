"""Deep watershed: markers from the inner-distance head, flooding of the interior head.

Semantics of deepcell-toolbox 0.12.1 `deepcell_toolbox/deep_watershed.py:45-208` (defaults,
deprecated aliases, per-image order: smooth, optional pixel expansion, h_maxima or
peak_local_max markers, label, watershed of -interior under `interior > threshold`, optional
edge erosion, small-object removal, hole filling, relabel) and `deepcell_toolbox/utils.py`
(erode_edges L41-65, fill_holes L660-687). The labels are identical to that path on the same
heads (tests/deepcell_reference.py is the oracle); what is faster is how the h-maxima are found
(redis_consumer/deepcell/hmaxima.py) and how small objects and hole candidates are counted.

Only scikit-image's `label` and its watershed core (deepcell/flood.py) are imported with this
module: what the applications' parameters never reach (peak_local_max, pixel expansion, edge
erosion) imports its scikit-image function on first use, since skimage.feature, .morphology and
.segmentation each import scipy.spatial, .sparse and .linalg (~23 MB of a worker's RSS).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as sk_label

from redis_consumer.deepcell.flood import watershed
from redis_consumer.deepcell.hmaxima import disk, h_maxima

MAXIMA_ALGORITHMS = ("h_maxima", "peak_local_max")
_DEPRECATED = {"min_distance": "radius", "distance_threshold": "interior_threshold",
               "detection_threshold": "maxima_threshold"}


def erode_edges(labels: np.ndarray, width: int) -> np.ndarray:
    """Clear each object's inner boundary `width` times (toolbox erode_edges)."""
    from skimage.segmentation import find_boundaries

    out = labels.copy()
    for _ in range(int(width)):
        out[find_boundaries(out, mode="inner")] = 0
    return out


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero every label with fewer than `min_size` pixels (skimage's label-image semantics)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    out = labels.copy()
    out[small[labels]] = 0
    return out


def euler_numbers(labels: np.ndarray) -> np.ndarray:
    """8-connected Euler number of every label at once (bit-quad counting, Gray 1971).

    Index i holds label i's value; equals regionprops' euler_number of that label's image.
    """
    lab = np.pad(labels, 1)
    a, b, c, d = lab[:-1, :-1], lab[:-1, 1:], lab[1:, :-1], lab[1:, 1:]
    n = int(labels.max()) + 1
    # a window holding a single value adds nothing (four of a label, or all background)
    mixed = (a != b) | (a != c) | (a != d)
    a, b, c, d = a[mixed], b[mixed], c[mixed], d[mixed]
    total = np.zeros(n, dtype=np.int64)

    def add(sel, lab_values, count, diagonal):
        weight = np.where(count == 1, 1, np.where(count == 3, -1, np.where(diagonal, -2, 0)))
        keep = sel & (weight != 0)
        total[:] += np.bincount(lab_values[keep], weights=weight[keep], minlength=n).astype(np.int64)

    ab, ac, ad, bc, bd, cd = a == b, a == c, a == d, b == c, b == d, c == d
    # each label in a 2x2 window is counted at the first corner (a, b, c, d order) it occupies
    add(a != 0, a, 1 + ab + ac + ad, ad & ~ab & ~ac)
    add((b != 0) & ~ab, b, 1 + bc + bd, bc & ~bd)
    add((c != 0) & ~ac & ~bc, c, 1 + cd, np.zeros_like(cd))
    add((d != 0) & ~ad & ~bd & ~cd, d, np.ones(d.shape, dtype=np.int64), np.zeros_like(cd))
    return total // 4


def fill_holes(labels: np.ndarray, size: int, connectivity: int = 1) -> np.ndarray:
    """Fill holes smaller than `size` in every label whose Euler number is below one.

    As the toolbox does it: labels in ascending order, each on its bounding box of the growing
    output, where `remove_small_holes(patch == label, size, connectivity)` also fills small
    background pieces touching the box's edge.
    """
    out = labels.copy()
    euler = euler_numbers(labels)
    slices = ndi.find_objects(labels)
    structure = ndi.generate_binary_structure(2, connectivity)
    for value in np.flatnonzero(euler < 1):
        if value == 0 or value > len(slices) or slices[value - 1] is None:
            continue
        box = slices[value - 1]
        patch = out[box]
        own = patch == value
        holes, count = ndi.label(~own, structure=structure)
        if count == 0:
            continue
        small = np.bincount(holes.ravel()) < size
        small[0] = False
        fill = small[holes]
        if fill.any():
            patch[fill] = value
    return out


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..n in ascending order, 0 kept (skimage's relabel_sequential values,
    found with a bincount instead of a sort)."""
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    mapping = np.cumsum(present, dtype=np.int64)
    mapping[~present] = 0
    return mapping.astype(np.int32)[labels]


def _resolve(kwargs: dict, params: dict) -> None:
    for old, new in _DEPRECATED.items():
        if old in kwargs:
            value = kwargs.pop(old)
            if value is not None:
                params[new] = value
    if kwargs:
        raise TypeError(f"unexpected deep_watershed parameters: {sorted(kwargs)}")


def deep_watershed(
    outputs: Sequence[np.ndarray],
    radius: int = 10,
    maxima_threshold: float = 0.1,
    interior_threshold: float = 0.01,
    maxima_smooth: float = 0,
    interior_smooth: float = 1,
    maxima_index: int = 0,
    interior_index: int = -1,
    label_erosion: int = 0,
    small_objects_threshold: int = 0,
    fill_holes_threshold: int = 0,
    pixel_expansion: int | None = None,
    maxima_algorithm: str = "h_maxima",
    exclude_border: bool = False,
    **deprecated,
) -> np.ndarray:
    """Label (B, X, Y, 1) int32 objects from [maxima (B,X,Y,>=1), ..., interior (B,X,Y,>=1)].

    Channel 0 of each head is used. `min_distance`, `distance_threshold` and
    `detection_threshold` are accepted as the toolbox's deprecated aliases.
    """
    params = {"radius": radius, "interior_threshold": interior_threshold,
              "maxima_threshold": maxima_threshold}
    _resolve(dict(deprecated), params)
    radius, interior_threshold = params["radius"], params["interior_threshold"]
    maxima_threshold = params["maxima_threshold"]
    if maxima_algorithm not in MAXIMA_ALGORITHMS:
        raise ValueError(f"maxima_algorithm must be one of {MAXIMA_ALGORITHMS}, got {maxima_algorithm!r}")
    try:
        maximas, interiors = outputs[maxima_index], outputs[interior_index]
    except (TypeError, KeyError, IndexError):
        raise ValueError("outputs must be a list of at least two arrays") from None
    if maximas.ndim != 4 or maximas.shape[:-1] != interiors.shape[:-1]:
        raise ValueError(f"maxima and interior must be (B, X, Y, C) of one shape, got "
                         f"{maximas.shape} and {interiors.shape}")
    footprint = disk(radius)
    result = np.zeros(maximas.shape[:-1] + (1,), dtype=np.int32)
    for i in range(maximas.shape[0]):
        maxima = ndi.gaussian_filter(maximas[i, ..., 0], maxima_smooth)
        interior = ndi.gaussian_filter(interiors[i, ..., 0], interior_smooth)
        if pixel_expansion:
            from skimage.morphology import dilation, footprint_rectangle

            side = int(pixel_expansion) * 2 + 1
            interior = dilation(interior, footprint=footprint_rectangle((side, side)))
        if maxima_algorithm == "peak_local_max":
            from skimage.feature import peak_local_max

            coords = peak_local_max(maxima, min_distance=radius, threshold_abs=maxima_threshold,
                                    exclude_border=exclude_border)
            peaks = np.zeros(maxima.shape, dtype=np.uint8)
            peaks[tuple(coords.T)] = 1
        else:
            peaks = h_maxima(maxima, maxima_threshold, footprint)
        markers = sk_label(peaks)
        labels = watershed(-1 * interior, markers, interior > interior_threshold)
        if label_erosion:
            labels = erode_edges(labels, label_erosion)
        if small_objects_threshold:
            labels = remove_small_objects(labels, small_objects_threshold)
        if fill_holes_threshold > 0:
            labels = fill_holes(labels, size=fill_holes_threshold)
        labels = relabel_sequential(labels)
        result[i, ..., 0] = labels
    return result
