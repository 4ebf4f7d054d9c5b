"""The deep watershed's marker-controlled flood, without importing all of skimage.morphology.

`skimage.segmentation.watershed` is a small wrapper (validate, pad, neighbour offsets) around a
Cython priority flood, `skimage.segmentation._watershed_cy.watershed_raveled`. Its module imports
`skimage.morphology` for two helpers, and that package's `__init__` imports every submodule and
with them scipy.spatial, scipy.sparse, scipy.linalg and scipy.special: ~23 MB of a worker's idle
RSS and ~110 ms of CPU on its first kiosk job (2 shared cores), none of it run by the deep
watershed. `watershed()` does the wrapper's work for the one case the deep watershed uses (2-D,
connectivity 1, markers and mask given, compactness 0, no watershed line) and calls the same core
with the same arguments (scikit-image 0.22-0.26 `segmentation/_watershed.py`), so the labels are
the same.

The core is private to scikit-image: tests/test_deepcell_flood.py pins its signature and compares
`watershed()` with the public function on images full of ties. A scikit-image without the core
gets the public function (the old import cost, the same labels).
"""

from __future__ import annotations

import numpy as np

try:
    from skimage.segmentation._watershed_cy import watershed_raveled as _core
except ImportError:  # pragma: no cover - a scikit-image that moved it: the public path below
    _core = None


def watershed(image: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`skimage.segmentation.watershed(image, markers, mask=mask)` of 2-D arrays, same labels."""
    image, markers = np.asanyarray(image), np.asanyarray(markers)
    mask = np.asanyarray(mask, dtype=bool)
    if _core is None or image.ndim != 2 or markers.shape != image.shape or mask.shape != image.shape:
        # (also the public function's errors for bad shapes)
        from skimage.segmentation import watershed as public

        return public(image, markers, mask=mask)
    # as skimage's _validate_inputs: markers outside the mask dropped, float64 image, int8 mask;
    # then everything padded by one zero pixel, so no flood step leaves the array
    output = np.pad(markers * mask, 1)
    padded = np.pad(image.astype(np.float64), 1)
    width = padded.shape[1]
    # the 4-neighbourhood as raveled offsets, in skimage's order (distance, then C order)
    neighbours = np.array([-width, -1, 1, width], dtype=np.intp)
    strides = np.array(padded.strides, dtype=np.intp) // padded.itemsize
    _core(padded.ravel(), np.flatnonzero(output), neighbours, np.pad(mask.astype(np.int8), 1).ravel(), strides,
          0, output.ravel(), False)
    return output[1:-1, 1:-1].copy()
