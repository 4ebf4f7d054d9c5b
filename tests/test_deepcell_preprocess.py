"""Preprocessing and resizing against direct scikit-image / numpy calls and known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import transform
from skimage.exposure import equalize_adapthist, rescale_intensity

from redis_consumer.deepcell.preprocess import (
    histogram_normalization,
    mesmer_preprocess,
    min_max_normalize,
    percentile_threshold,
)
from redis_consumer.deepcell.resize import (
    resize,
    resize_input,
    resize_labels,
    scaled_shape,
)
from tests.deepcell_synthetic import matched_ious, touching_nuclei


def _image(shape=(2, 90, 70, 2), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.gamma(2.0, 300.0, shape)).astype(np.float32)


@pytest.mark.parametrize("kernel_size", [None, 16, 128])
def test_histogram_normalization_is_clahe_per_plane(kernel_size):
    image = _image()
    image[1, ..., 1] = 7.0  # constant plane -> zeros
    out = histogram_normalization(image, kernel_size=kernel_size)
    assert out.dtype == np.float32 and out.shape == image.shape
    for b, c in ((0, 0), (0, 1), (1, 0)):
        plane = rescale_intensity(image[b, ..., c], out_range=(0.0, 1.0))
        expected = equalize_adapthist(plane, kernel_size=kernel_size).astype(np.float32)
        np.testing.assert_array_equal(out[b, ..., c], expected)
    assert not out[1, ..., 1].any()
    assert image[0, 0, 0, 0] != out[0, 0, 0, 0]  # the input is left alone


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # skimage's img_as_uint of the NaN plane
@pytest.mark.parametrize("kernel_size", [None, 16])
def test_histogram_normalization_of_one_float32_channel_reads_the_input_in_place(kernel_size):
    """The one-channel float32 path (the pipeline's) writes a new array, leaves a read-only
    input alone and equals skimage, with a constant plane and a NaN plane among the batch."""
    image = _image((3, 90, 70, 1), seed=5)
    image[1] = 7.0
    image[2, 3, 4, 0] = np.nan
    before = image.copy()
    image.setflags(write=False)
    out = histogram_normalization(image, kernel_size=kernel_size)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_array_equal(image, before)
    expected = equalize_adapthist(rescale_intensity(image[0, ..., 0], out_range=(0.0, 1.0)),
                                  kernel_size=kernel_size).astype(np.float32)
    np.testing.assert_array_equal(out[0, ..., 0], expected)
    assert not out[1].any()
    # the copy path (a float64 input cast first) gives the same bytes, NaN plane included
    np.testing.assert_array_equal(out, histogram_normalization(image.astype(np.float64), kernel_size=kernel_size))


def test_percentile_threshold_clips_at_the_nonzero_percentile():
    image = _image()
    image[0, :10, :, 0] = 0
    image[1, ..., 1] = 0  # an empty channel stays empty
    out = percentile_threshold(image, percentile=99.0)
    assert out.dtype == image.dtype
    plane = image[0, ..., 0]
    ceiling = np.percentile(plane[plane != 0], 99.0)
    np.testing.assert_array_equal(out[0, ..., 0], np.minimum(plane, np.float32(ceiling)))
    assert not out[1, ..., 1].any()


def test_mesmer_preprocess_is_threshold_then_clahe_128():
    image = _image()
    expected = histogram_normalization(percentile_threshold(image, 99.9), kernel_size=128)
    np.testing.assert_array_equal(mesmer_preprocess(image), expected)
    np.testing.assert_array_equal(mesmer_preprocess(image, threshold=False),
                                  histogram_normalization(image, kernel_size=128))
    np.testing.assert_array_equal(mesmer_preprocess(image, normalize=False),
                                  percentile_threshold(image))


def test_mesmer_preprocess_per_plane_equals_the_two_steps_on_odd_planes():
    image = _image((3, 64, 50, 2), seed=4)
    image[0, ..., 1] = 0.0  # no non-zero pixel: threshold zeros, then a constant plane
    image[1, ..., 0] = -0.0  # the same with negative zeros
    image[1, ..., 1] = 9.0  # constant non-zero plane
    image[2, :5, :5, 0] = 0.0  # some zeros left out of the percentile
    expected = histogram_normalization(percentile_threshold(image, 99.9), kernel_size=128)
    got = mesmer_preprocess(image)
    np.testing.assert_array_equal(got, expected)
    assert not np.signbit(got[1, ..., 0]).any()


def test_min_max_normalize():
    image = _image()
    image[1, ..., 0] = 3
    out = min_max_normalize(image)
    plane = image[0, ..., 1]
    np.testing.assert_allclose(out[0, ..., 1], (plane - plane.min()) / (plane.max() - plane.min()), rtol=1e-6)
    assert not out[1, ..., 0].any()
    clipped = min_max_normalize(image, clip=True)
    assert clipped[0, ..., 1].min() == 0 and clipped[0, ..., 1].max() == 1
    assert (clipped[0, ..., 1] == 1).sum() > (out[0, ..., 1] == 1).sum()  # the top 0.1 % clipped


def test_multichannel_resize_is_skimage():
    image = _image((2, 50, 40, 3))
    out = resize(image, (75, 33))
    for b in range(2):
        expected = transform.resize(image[b], (75, 33, 3), mode="constant", preserve_range=True,
                                    order=1, anti_aliasing=True).astype(np.float32)
        np.testing.assert_array_equal(out[b], expected)
    labels = np.random.default_rng(0).integers(0, 9, (1, 20, 30, 2)).astype(np.int32)
    back = resize(labels, (40, 60), labeled_image=True)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back[0, ::2, ::2], labels[0])


def test_single_channel_resize_follows_opencv_rules():
    # 2x down: OpenCV's INTER_LINEAR samples at half-pixel centres = the 2x2 mean
    image = _image((1, 64, 48, 1))
    down = resize(image, (32, 24))
    mean = image[0, ..., 0].reshape(32, 2, 24, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(down[0, ..., 0], mean, rtol=1e-6)
    # up-sampling a linear ramp stays linear inside, and clamps at the edges
    ramp = np.tile(np.arange(10, dtype=np.float32), (4, 1))[None, ..., None]
    up = resize(ramp, (4, 20))[0, 0, :, 0]
    np.testing.assert_allclose(up[1:-1], np.clip((np.arange(1, 19) + 0.5) / 2 - 0.5, 0, 9), atol=1e-6)
    assert up[0] == 0 and up[-1] == 9
    # nearest: source index floor(i * src / dst), no half-pixel shift
    labels = np.arange(10, dtype=np.int32)[None, :, None, None] * np.ones((1, 1, 3, 1), np.int32)
    np.testing.assert_array_equal(resize(labels, (4, 3), labeled_image=True)[0, :, 0, 0], [0, 2, 5, 7])
    assert resize(image.astype(np.float64), (10, 10)).dtype == np.float64


def test_mpp_rescale_shape_rule():
    shape = (1, 1000, 777, 1)
    assert scaled_shape(shape, None, 0.65) is None and scaled_shape(shape, 0.65, 0.65) is None
    assert scaled_shape(shape, 0.65 * 1.3, 0.65) == (int(1000 * 1.3), int(777 * 1.3))
    assert scaled_shape(shape, 0.33, 0.65) == (int(1000 * 0.33 / 0.65), int(777 * 0.33 / 0.65))


@pytest.mark.parametrize("scale", [0.5, 0.77, 1.6, 2.0])
def test_mpp_round_trip_keeps_label_geometry(scale):
    truth, centres, _ = touching_nuclei((160, 200), seed=1)
    mask = (truth > 0)[None, ..., None].astype(np.float32)
    resized = resize_input(mask, scale * 0.65, 0.65)  # the image at model resolution
    assert resized.shape[1:3] == (int(160 * scale), int(200 * scale))
    # labels found at model resolution: the objects where the resized image is bright
    labels = resize(truth[None, ..., None], resized.shape[1:3], labeled_image=True)
    labels[resized < 0.5] = 0
    back = resize_labels(labels, truth.shape)
    assert back.shape == (1,) + truth.shape + (1,)
    assert set(np.unique(back)) == set(np.unique(truth))
    # nearest-neighbour both ways loses up to a model pixel at each edge, no more
    ious = matched_ious(truth, back[0, ..., 0])
    assert ious.mean() >= (0.8 if scale < 1 else 0.85) and ious.min() >= 0.7
    from scipy import ndimage as ndi
    ids = np.arange(1, truth.max() + 1)
    before = np.array(ndi.center_of_mass(truth > 0, truth, ids))
    after = np.array(ndi.center_of_mass(back[0, ..., 0] > 0, back[0, ..., 0], ids))
    assert np.abs(after - before).max() <= max(1.0, 1.0 / scale)
    for c in centres:
        assert back[0, int(c[0]), int(c[1]), 0] == truth[int(c[0]), int(c[1])]
