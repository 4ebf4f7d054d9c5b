"""Label post-processing and the overlay: the K-disks check, touching objects, noise, dtypes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from redis_consumer.utils import labels, overlay


def disks(shape, centres, radius, value=1000.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = value
    return img


def k_disks(k, size=256, radius=9, seed=0):
    """K separated disks on a noisy background."""
    rng = np.random.default_rng(seed)
    centres = []
    step = size // int(np.ceil(np.sqrt(k)))
    for i in range(k):
        centres.append((step // 2 + (i // int(np.ceil(np.sqrt(k)))) * step, step // 2 + (i % int(np.ceil(np.sqrt(k)))) * step))
    img = disks((size, size), centres, radius) + rng.normal(100, 10, (size, size)).astype(np.float32)
    return img


def test_k_separated_disks_give_exactly_k_objects():
    for k in (1, 7, 25):
        img = k_disks(k)[None, :, :, None]
        prob = labels.normalize(img)[..., 0]
        lab = labels.label_objects(prob)
        assert labels.count_objects(lab) == [k]
        assert lab.max() == k and set(np.unique(lab)) == set(range(k + 1))


def test_touching_disks_are_split():
    img = disks((120, 160), [(60, 50), (60, 102)], 28)
    lab = labels.label_objects(labels.normalize(img[None, :, :, None])[..., 0])
    assert labels.count_objects(lab) == [2]
    sizes = np.bincount(lab.ravel())[1:]
    assert sizes.min() > 0.4 * sizes.sum()  # two halves, not a core and a ring
    assert lab[0, 60, 50] != lab[0, 60, 102]


def test_elongated_nuclei_stay_whole():
    """Plateaus of the distance map must not cut a nucleus into a core and a ring."""
    yy, xx = np.mgrid[:96, :160]
    ellipses = np.zeros((96, 160), np.float32)
    ellipses[((yy - 30) / 9.0) ** 2 + ((xx - 40) / 26.0) ** 2 < 1] = 1000  # long, thin
    ellipses[((yy - 64) / 14.0) ** 2 + ((xx - 110) / 20.0) ** 2 < 1] = 1000
    lab = labels.label_objects(labels.normalize(ellipses[None, :, :, None])[..., 0])[0]
    assert labels.count_objects(lab[None]) == [2]
    assert lab[64, 110] == lab[64, 95] != 0 and lab[30, 40] == lab[30, 20] != 0


def test_specks_below_min_size_are_dropped():
    img = disks((64, 64), [(32, 32)], 10)
    img[5, 5] = 1000
    lab = labels.label_objects(labels.normalize(img[None, :, :, None])[..., 0])
    assert labels.count_objects(lab) == [1]


def test_foreground_channel_conventions():
    two = np.zeros((1, 4, 4, 2), np.float32)
    two[..., 1] = 0.9
    assert labels.foreground(two).max() == np.float32(0.9)
    raw = np.full((1, 4, 4, 1), 500.0, np.float32)
    raw[0, 0, 0, 0] = 0
    fg = labels.foreground(raw)
    assert fg.min() == 0.0 and fg.max() == 1.0


def test_normalize_handles_constant_and_nan_images():
    flat = np.full((1, 8, 8, 1), 7, np.uint16)
    assert np.all(labels.normalize(flat) == 0)
    nan = np.zeros((1, 8, 8, 1), np.float32)
    nan[0, 0, 0, 0] = np.nan
    assert labels.normalize(nan).shape == (1, 8, 8, 1)


def test_compact_dtype():
    assert labels.compact_dtype(np.array([[0, 3]], np.int32)).dtype == np.uint16
    assert labels.compact_dtype(np.array([[0, 70000]], np.int32)).dtype == np.uint32


def test_overlay_draws_outlines(tmp_path):
    img = disks((40, 40), [(20, 20)], 8, 1.0)
    lab = labels.label_objects(img[None])
    path = overlay.save_png(str(tmp_path / "o.png"), img, lab[0])
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert rgb.shape == (40, 40, 3)
    red = (rgb[..., 0] == 255) & (rgb[..., 1] == 40)
    assert red.sum() > 20 and not red[20, 20] and not red[0, 0]
