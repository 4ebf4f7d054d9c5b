"""Spot postprocessing against ground truth: known sub-pixel spots, cells and the kiosk's CSV."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from redis_consumer.deepcell.spots import (
    SPOT_RGB,
    assign_spots,
    spot_points,
    spot_points_batch,
    spot_preprocess,
    spots_csv,
    spots_overlay,
    spots_overlay_png,
)
from tests.helpers.synthetic_cells import spot_image, spot_positions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perfect_heads_recover_known_spots(seed):
    rng = np.random.default_rng(seed)
    truth = spot_positions(200, 256, rng)
    _, classification, offsets = spot_image(truth, 256, rng)
    found = spot_points(classification, offsets)
    distance, nearest = cKDTree(truth).query(found)
    matched = set(nearest[distance <= 1.0].tolist())
    assert len(matched) >= 0.95 * len(truth)
    false_positives = int(np.sum(distance > 1.0)) + (int(np.sum(distance <= 1.0)) - len(matched))
    assert false_positives <= 0.02 * len(truth)
    # sub-pixel: the offsets put the points far closer than the pixel grid would
    assert np.median(distance) < 0.3


def test_points_are_peak_plus_offset_and_skip_the_border():
    classification = np.zeros((12, 12, 2), dtype=np.float32)
    offsets = np.zeros((12, 12, 2), dtype=np.float32)
    classification[4, 7, 1] = 0.99
    offsets[4, 7] = (0.25, -0.4)  # ch0 = d-row, ch1 = d-col
    classification[8, 2, 1] = 0.97
    classification[0, 5, 1] = 1.0  # on the edge: skimage's default exclude_border drops it
    classification[6, 9, 1] = 0.94  # below the 0.95 threshold
    points = spot_points(classification, offsets)
    assert points.dtype == np.float64
    np.testing.assert_allclose(points, [[4.25, 6.6], [8.0, 2.0]], atol=1e-6)  # strongest first


def test_batch_points_and_threshold_range():
    classification = np.zeros((2, 10, 10, 2), dtype=np.float32)
    offsets = np.zeros((2, 10, 10, 2), dtype=np.float32)
    classification[1, 5, 5, 1] = 1.0
    result = spot_points_batch(classification, offsets)
    assert [len(p) for p in result] == [0, 1]
    assert result[0].shape == (0, 2)
    with pytest.raises(ValueError):
        spot_points_batch(classification, offsets, threshold=1.5)
    with pytest.raises(ValueError):
        spot_points(classification[0], offsets[0, :5])


def test_min_max_normalize_per_plane_and_clip():
    rng = np.random.default_rng(3)
    image = rng.uniform(5, 50, (2, 16, 16, 2)).astype(np.uint16)
    image[1, ..., 1] = 7  # constant plane
    out = spot_preprocess(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    for b, c in [(0, 0), (0, 1), (1, 0)]:
        assert out[b, ..., c].min() == 0 and out[b, ..., c].max() == pytest.approx(1)
        plane = image[b, ..., c].astype(np.float32)
        np.testing.assert_allclose(out[b, ..., c], (plane - plane.min()) / (plane.max() - plane.min()), rtol=1e-6)
    assert not out[1, ..., 1].any()
    hot = np.zeros((1, 100, 100, 1), dtype=np.float32)
    hot[0, :50, :, 0] = 1.0
    hot[0, 0, 0, 0] = 1e6  # one outlier above the 99.9th percentile
    clipped = spot_preprocess(hot, clip=True)
    assert clipped[0, 10, 10, 0] == pytest.approx(1.0)  # the outlier no longer squashes the range
    assert spot_preprocess(hot)[0, 10, 10, 0] < 1e-5
    with pytest.raises(ValueError):
        spot_preprocess(np.zeros((4, 4)))


def _cells(size: int = 64) -> np.ndarray:
    labels = np.zeros((size, size), dtype=np.int32)
    rows, cols = np.mgrid[:size, :size]
    for label, (r, c) in enumerate([(15, 15), (15, 45), (45, 30)], start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= 9**2] = label
    return labels


def test_spots_assigned_to_the_right_synthetic_cell():
    rng = np.random.default_rng(4)
    labels = _cells()
    centres = {1: (15, 15), 2: (15, 45), 3: (45, 30)}
    coords, expected = [], []
    for label, (r, c) in centres.items():
        for _ in range(5):
            angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(0, 7)
            coords.append((r + radius * np.sin(angle), c + radius * np.cos(angle)))
            expected.append(label)
    coords += [(2.5, 60.2), (60.7, 3.1)]  # background
    expected += [0, 0]
    cells = assign_spots(np.array(coords), labels)
    assert cells.shape == (len(coords), 1)
    assert cells[:, 0].tolist() == expected
    nuclei = np.where(labels > 0, labels + 10, 0)
    both = assign_spots(np.array(coords), np.stack([labels, nuclei], axis=-1))
    assert both[:, 1].tolist() == [e + 10 if e else 0 for e in expected]


def test_assignment_truncates_like_int_and_is_bounds_safe():
    labels = np.arange(1, 17, dtype=np.int32).reshape(4, 4)
    coords = np.array([[-0.4, 1.7], [3.9, 3.99], [-1.2, 0.0], [4.0, 1.0], [1.0, 9.5], [np.nan, 1.0]])
    assert assign_spots(coords, labels)[:, 0].tolist() == [2, 16, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        assign_spots(coords, np.zeros((2, 2, 2, 2)))


def test_csv_matches_the_kiosk_format_exactly():
    labels = _cells()
    coords = np.array([[15.25, 14.5], [44.125, 30.0], [2.0, 60.75]])
    assert spots_csv(coords) == "x,y\r\n14.5,15.25\r\n30.0,44.125\r\n60.75,2.0\r\n"
    assert spots_csv(coords, labels) == "x,y,cellID0\r\n14.5,15.25,1\r\n30.0,44.125,3\r\n60.75,2.0,0\r\n"
    two = np.stack([labels, labels * 2], axis=-1)
    assert spots_csv(coords[:1], two) == "x,y,cellID0,cellID1\r\n14.5,15.25,1,2\r\n"
    assert spots_csv(np.zeros((0, 2)), labels[..., None]) == "x,y,cellID0\r\n"
    # floats are printed as Python prints them (shortest repr), not rounded
    assert spots_csv(np.array([[0.1 + 0.2, 1 / 3]])) == "x,y\r\n0.3333333333333333,0.30000000000000004\r\n"
    with pytest.raises(ValueError):
        spots_csv(coords, np.zeros((64, 64, 3)))


def test_overlay_png_marks_spots_in_magenta():
    rng = np.random.default_rng(5)
    truth = spot_positions(20, 64, rng)
    image, _, _ = spot_image(truth, 64, rng)
    png = spots_overlay_png(image, truth)
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert decoded.shape == (64, 64, 3)
    np.testing.assert_array_equal(decoded, spots_overlay(image, truth))
    magenta = np.all(decoded == SPOT_RGB, axis=-1)
    for r, c in np.floor(truth + 0.5).astype(int):
        assert magenta[r, c]
    grey = decoded[~magenta]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    assert magenta.sum() <= 9 * len(truth)
    # spots off the image are ignored; a flat image is black, not NaN
    flat = spots_overlay(np.ones((8, 8)), np.array([[-5.0, 3.0], [3.0, 3.0]]))
    assert np.all(flat[3, 3] == SPOT_RGB) and flat[7, 7].tolist() == [0, 0, 0]


def test_end_to_end_image_to_csv():
    rng = np.random.default_rng(6)
    truth = spot_positions(60, 128, rng)
    image, classification, offsets = spot_image(truth, 128, rng)
    normalised = spot_preprocess(image[None, ..., None])
    assert normalised.min() == 0 and normalised.max() == 1
    labels = np.zeros((128, 128), dtype=np.int32)
    labels[:, 64:] = 7
    points = spot_points_batch(classification[None], offsets[None])[0]
    lines = spots_csv(points, labels).split("\r\n")
    assert lines[0] == "x,y,cellID0" and lines[-1] == ""
    rows = [line.split(",") for line in lines[1:-1]]
    assert len(rows) == len(points) >= 57
    for x, y, cell in rows:
        assert cell == ("7" if float(x) >= 64 else "0")
