"""deepcell.flood: the same labels as skimage.segmentation.watershed, through the same private core.

The flood calls scikit-image's private Cython core directly (so a kiosk job does not import all
of skimage.morphology, see the module docstring); these tests pin what it relies on, so an upgrade
of scikit-image that changes the core fails here instead of changing labels.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label
from skimage.segmentation import watershed as skimage_watershed

from redis_consumer.deepcell import flood


def test_the_private_core_is_there_with_the_signature_the_flood_calls():
    assert flood._core is not None
    assert list(inspect.signature(flood._core).parameters) == [
        "image", "marker_locations", "structure", "mask", "strides", "compactness", "output", "wsl"]


def _case(rng, shape, kind):
    if kind == "plateaus":  # few levels: most flood steps are ties, settled by age and neighbour order
        image = np.round(ndi.gaussian_filter(rng.random(shape), 2) * 12).astype(np.float32)
    elif kind == "flat":
        image = np.zeros(shape, np.float32)
    else:
        image = rng.random(shape, dtype=np.float32)
    markers = label(rng.random(shape) > 0.97)
    mask = rng.random(shape) > 0.2
    return -1 * image, markers, mask


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (31, 47), (64, 64), (0, 5)])
@pytest.mark.parametrize("kind", ["plateaus", "flat", "noise"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_skimage_watershed(shape, kind, seed):
    image, markers, mask = _case(np.random.default_rng(seed), shape, kind)
    ours = flood.watershed(image, markers, mask)
    theirs = skimage_watershed(image, markers, mask=mask, watershed_line=0)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs)


def test_marker_dtypes_and_markers_outside_the_mask_as_skimage():
    image, markers, mask = _case(np.random.default_rng(7), (40, 40), "plateaus")
    markers[~mask & (markers == 0)] = 3  # markers the mask drops
    for dtype in (np.int32, np.int64, np.uint16):
        ours = flood.watershed(image, markers.astype(dtype), mask)
        theirs = skimage_watershed(image, markers.astype(dtype), mask=mask)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), dtype


def test_inputs_are_left_alone():
    image, markers, mask = _case(np.random.default_rng(3), (20, 20), "noise")
    before = image.copy(), markers.copy(), mask.copy()
    flood.watershed(image, markers, mask)
    assert all(np.array_equal(a, b) for a, b in zip((image, markers, mask), before))


def test_shapes_it_does_not_handle_go_to_skimage(monkeypatch):
    rng = np.random.default_rng(4)
    volume = rng.random((4, 6, 6))
    markers = label(volume > 0.9)
    got = flood.watershed(volume, markers, np.ones(volume.shape, bool))
    assert np.array_equal(got, skimage_watershed(volume, markers, mask=np.ones(volume.shape, bool)))
    with pytest.raises(ValueError):
        flood.watershed(np.zeros((4, 4)), np.zeros((4, 5), int), np.ones((4, 4), bool))
    monkeypatch.setattr(flood, "_core", None)  # a scikit-image without the core: the public function
    image, markers, mask = _case(rng, (16, 16), "plateaus")
    assert np.array_equal(flood.watershed(image, markers, mask), skimage_watershed(image, markers, mask=mask))
