"""Deep watershed: ground truth on synthetic touching nuclei, and the fast path == the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi
from skimage.measure import regionprops
from skimage.morphology import disk
from skimage.morphology import h_maxima as skimage_h_maxima

from redis_consumer.deepcell import hmaxima
from redis_consumer.deepcell.watershed import deep_watershed, euler_numbers, fill_holes
from tests.deepcell_reference import reference_deep_watershed, reference_fill_holes
from tests.deepcell_synthetic import heads_from_truth, matched_ious, touching_nuclei


def _batch(*planes):
    return [p[None, ..., None] for p in planes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_touching_nuclei_are_found_one_for_one(seed):
    truth, centres, _ = touching_nuclei(seed=seed)
    inner, outer = heads_from_truth(truth)
    # the applications' parameters; interior threshold at the heads' edge value so the
    # smoothing (interior_smooth=1) does not grow objects past their true edge
    labels = deep_watershed(_batch(inner, outer), radius=10, maxima_threshold=0.1,
                            interior_threshold=0.5)[0, ..., 0]
    assert labels.max() == truth.max() == len(centres)
    ious = matched_ious(truth, labels)
    assert ious.mean() >= 0.9, ious
    # each object's label sits on its true centre
    hits = {int(labels[round(c[0]), round(c[1])]) for c in centres}
    assert len(hits) == len(centres) and 0 not in hits


def test_default_parameters_count_touching_nuclei_exactly():
    truth, centres, _ = touching_nuclei(seed=3)
    inner, outer = heads_from_truth(truth)
    for interior in (outer, (truth > 0).astype(np.float32)):
        labels = deep_watershed(_batch(inner, interior))[0, ..., 0]
        assert labels.max() == len(centres)


def _random_heads(rng, shape, kind):
    if kind == "noise":
        maxima = rng.random(shape, dtype=np.float32)
    elif kind == "smooth":
        maxima = ndi.gaussian_filter(rng.random(shape), 2).astype(np.float32)
        maxima = (maxima - maxima.min()) / np.ptp(maxima)
    elif kind == "plateaus":
        maxima = (np.round(ndi.gaussian_filter(rng.random(shape), 3) * 40) / 8).astype(np.float32)
    else:  # synthetic nuclei with float noise
        truth, _, _ = touching_nuclei(shape, seed=int(rng.integers(1000)))
        maxima, _ = heads_from_truth(truth)
        maxima = maxima + rng.normal(0, 0.01, shape).astype(np.float32)
    interior = ndi.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)
    return maxima, interior


OPTIONS = [
    {},
    {"maxima_threshold": 0.05, "radius": 3},
    {"radius": 2, "maxima_threshold": 0.075, "interior_threshold": 0.45, "interior_smooth": 2,
     "small_objects_threshold": 15, "fill_holes_threshold": 15},
    {"radius": 5, "label_erosion": 1, "pixel_expansion": 1, "maxima_smooth": 1},
    {"radius": 1, "maxima_threshold": 0.2, "small_objects_threshold": 4},
]


@pytest.mark.parametrize("algorithm", ["h_maxima", "peak_local_max"])
@pytest.mark.parametrize("kind", ["noise", "smooth", "plateaus", "nuclei"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(sorted(o)) or "defaults")
def test_fast_equals_reference(algorithm, kind, options):
    rng = np.random.default_rng(abs(hash((algorithm, kind, str(options)))) % 2**32)
    shape = (int(rng.integers(60, 130)), int(rng.integers(60, 130)))
    maxima, interior = _random_heads(rng, shape, kind)
    if options.get("interior_threshold") is None:
        options = {**options, "interior_threshold": 0.5}
    outputs = [np.stack([maxima, maxima * 0.5])[..., None], np.stack([interior, interior[::-1]])[..., None]]
    fast = deep_watershed(outputs, maxima_algorithm=algorithm, **options)
    slow = reference_deep_watershed(outputs, maxima_algorithm=algorithm, **options)
    assert fast.shape == slow.shape == (2,) + shape + (1,)
    np.testing.assert_array_equal(fast, slow)


def _exact_path_only(monkeypatch):
    """Switch off the cost guards and fail if skimage would be used instead of our floods."""
    monkeypatch.setattr(hmaxima, "_FLOOD_COST_PIXELS", 0)
    monkeypatch.setattr(hmaxima, "_CANDIDATE_SHARE", 0)
    monkeypatch.setattr(hmaxima, "_WORK_PER_NEIGHBOUR", 1e-9)

    def no_fallback(*args):
        raise AssertionError("fell back to skimage")

    monkeypatch.setattr(hmaxima, "_fallback", no_fallback)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["default", "points", "grid"])
def test_h_maxima_equals_skimage(dtype, mode, monkeypatch):
    if mode != "default":
        _exact_path_only(monkeypatch)
    if mode == "grid":  # the window-grid flood instead of the point-set one
        monkeypatch.setattr(hmaxima, "_POINTS_LIMIT", 0)
    rng = np.random.default_rng(7 + len(mode))
    for trial in range(12):
        shape = (int(rng.integers(3, 48)), int(rng.integers(3, 48)))
        image = rng.random(shape)
        if trial % 3 == 1:
            image = ndi.gaussian_filter(image, float(rng.uniform(0.5, 3)))
        if trial % 3 == 2:
            image = np.round(image * 6) / 6 - 0.5  # plateaus, negative values
        image = image.astype(dtype)
        h = float(rng.choice([0.01, 0.05, 0.1, 0.3]))
        footprint = disk(int(rng.integers(1, 8)))
        if h > np.ptp(image):
            h = float(np.ptp(image)) / 3
        np.testing.assert_array_equal(hmaxima.h_maxima(image, h, footprint),
                                      skimage_h_maxima(image, h, footprint=footprint))


def test_nuclei_heads_take_the_fast_path(monkeypatch):
    monkeypatch.setattr(hmaxima, "_fallback", lambda *a: pytest.fail("fell back to skimage"))
    truth, _, _ = touching_nuclei((300, 300), seed=9)
    inner, _ = heads_from_truth(truth)
    inner += np.random.default_rng(0).normal(0, 0.005, inner.shape).astype(np.float32)
    ours = hmaxima.h_maxima(inner, 0.1, disk(10))
    np.testing.assert_array_equal(ours, skimage_h_maxima(inner, 0.1, footprint=disk(10)))
    assert set(np.unique(truth[ours > 0])) >= set(range(1, truth.max() + 1))  # a top per object


@pytest.mark.parametrize("radius", [1, 2, 3, 4, 10])
@pytest.mark.parametrize("exact_only", [False, True])
def test_h_maxima_on_noisy_nuclei_heads_every_radius(radius, exact_only, monkeypatch):
    if exact_only:
        _exact_path_only(monkeypatch)
    truth, _, _ = touching_nuclei((200, 240), seed=radius, rmin=5, rmax=12, squeeze=0.7)
    inner, _ = heads_from_truth(truth)
    rng = np.random.default_rng(radius)
    for noise, h in ((0.003, 0.075), (0.02, 0.1), (0.05, 0.1)):
        image = inner + rng.normal(0, noise, inner.shape).astype(np.float32)
        np.testing.assert_array_equal(hmaxima.h_maxima(image, h, disk(radius)),
                                      skimage_h_maxima(image, h, footprint=disk(radius)))


def test_disk_equals_skimage():
    for radius in range(41):
        ours = hmaxima.disk(radius)
        assert ours.dtype == disk(radius).dtype and np.array_equal(ours, disk(radius)), radius


def test_h_maxima_edge_cases():
    flat = np.full((20, 20), 0.5, np.float32)
    assert not hmaxima.h_maxima(flat, 0.1, disk(3)).any()  # h > ptp: nothing
    with pytest.raises(ValueError):
        hmaxima.h_maxima(np.arange(16.0).reshape(4, 4), 0, disk(1))
    square = np.ones((5, 5), bool)  # not a disk: the general flood
    image = ndi.gaussian_filter(np.random.default_rng(0).random((50, 50)), 2)
    np.testing.assert_array_equal(hmaxima.h_maxima(image, 0.01, square),
                                  skimage_h_maxima(image, 0.01, footprint=square))
    ints = (np.random.default_rng(1).random((30, 30)) * 50).astype(np.uint8)  # falls back
    np.testing.assert_array_equal(hmaxima.h_maxima(ints, 5, disk(2)),
                                  skimage_h_maxima(ints, 5, footprint=disk(2)))


def test_euler_numbers_match_regionprops():
    rng = np.random.default_rng(3)
    labels = ndi.label(rng.random((80, 90)) > 0.45)[0]
    labels[20:40, 20:40] = 500  # a block with a hole and a diagonal touch
    labels[28:32, 28:32] = 0
    labels[40, 40] = 500
    euler = euler_numbers(labels)
    for prop in regionprops(labels):
        assert euler[prop.label] == prop.euler_number


def test_fill_holes_matches_toolbox_semantics():
    rng = np.random.default_rng(4)
    for _ in range(5):
        labels = ndi.label(rng.random((70, 70)) > 0.4)[0]
        labels[10:30, 10:30] = labels.max() + 1
        labels[15:18, 15:19] = 0
        labels[22:25, 22:24] = 3  # another label inside: a hole only for connectivity's sake
        np.testing.assert_array_equal(fill_holes(labels, 15), reference_fill_holes(labels, 15))


def test_bad_arguments():
    heads = [np.zeros((1, 8, 8, 1), np.float32)] * 2
    with pytest.raises(ValueError, match="maxima_algorithm"):
        deep_watershed(heads, maxima_algorithm="nope")
    with pytest.raises(ValueError, match="one shape"):
        deep_watershed([np.zeros((1, 8, 8, 1)), np.zeros((1, 8, 9, 1))])
    with pytest.raises(ValueError, match="at least two"):
        deep_watershed([])
    with pytest.raises(TypeError):
        deep_watershed(heads, radious=3)
    # deprecated aliases are honoured
    truth, _, _ = touching_nuclei(seed=5)
    inner, outer = heads_from_truth(truth)
    a = deep_watershed(_batch(inner, outer), min_distance=4, distance_threshold=0.5)
    b = deep_watershed(_batch(inner, outer), radius=4, interior_threshold=0.5)
    np.testing.assert_array_equal(a, b)



@settings(max_examples=80, deadline=None)
@given(image=arrays(np.float32, st.tuples(st.integers(2, 20), st.integers(2, 20)),
                    elements=st.sampled_from([0.0, 0.05, 0.1, 0.1000001, 0.2, 0.5, 0.55, 1.0, -0.3])),
       h=st.sampled_from([0.05, 0.1, 0.2, 0.45]), radius=st.integers(1, 4))
def test_h_maxima_property_few_levels(image, h, radius):
    """Plateaus, ties and values one ulp apart: our floods agree with skimage exactly."""
    with pytest.MonkeyPatch.context() as mp:
        _exact_path_only(mp)
        np.testing.assert_array_equal(hmaxima.h_maxima(image, h, disk(radius)),
                                      skimage_h_maxima(image, h, footprint=disk(radius)))
