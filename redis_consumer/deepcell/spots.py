"""Spot detection (the kiosk's `spot`/`polaris` jobs) around the model, without TensorFlow.

What deepcell-spots 0.3.2 and kiosk-redis-consumer do, re-written in numpy/scikit-image:

* `spot_preprocess`: the application's `min_max_normalize(image, clip)` per (batch, channel)
  [vanvalenlab/deepcell-spots@0.3.2 deepcell_spots/preprocessing_utils.py:61-93; the kiosk
  passes clip=False, KRC redis_consumer/settings.py:126-129].
* `spot_points`: `y_annotations_to_point_list_max` as the application calls it (threshold 0.95,
  min_distance 1) [deepcell_spots/postprocessing_utils.py:111-147;
  deepcell_spots/applications/spot_detection.py:279-296].
* `assign_spots` / `spots_csv`: the polaris consumer's spot-to-cell lookup and CSV
  [vanvalenlab/kiosk-redis-consumer@a183af9 redis_consumer/consumers/polaris_consumer.py:260-279
  (with labels) and 312-322 (`segmentation_type=none`)].
* `spots_overlay_png`: a PNG of the spots over the image, in place of the spot consumer's
  matplotlib scatter TIFF [KRC redis_consumer/consumers/spot_consumer.py:57-71].
"""

from __future__ import annotations

import csv
import io

import numpy as np
from skimage.feature import peak_local_max

SPOT_THRESHOLD = 0.95  # spot_detection.py:244 (predict default) and KRC settings.py:127
SPOT_MIN_DISTANCE = 1  # spot_detection.py:289
SPOT_RGB = (255, 0, 255)  # the spot consumer's `c='m'` (spot_consumer.py:68)
_GREY_LEVELS = 16
_SPOT_INDEX = _GREY_LEVELS
_PALETTE = [round(i * 255 / (_GREY_LEVELS - 1)) for i in range(_GREY_LEVELS) for _ in range(3)] + list(SPOT_RGB)


def spot_preprocess(image: np.ndarray, clip: bool = False) -> np.ndarray:
    """`min_max_normalize`: float32 (B, H, W, C) scaled to [0, 1] per (batch, channel).

    With `clip`, each plane is first clipped to its [0.01, 99.9] percentiles
    (preprocessing_utils.py:85-86). A constant plane (max == min), which the library turns into
    NaN (0/0, preprocessing_utils.py:90), becomes zeros here so that no NaN reaches the model.
    """
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"spot images must be 4-D (batch, height, width, channel); got shape {image.shape}")
    out = image.astype(np.float32, copy=True)
    for b in range(out.shape[0]):
        for c in range(out.shape[-1]):
            plane = out[b, ..., c]
            if clip:  # two scalar percentiles (float32 for a float32 plane), as the library does
                plane = np.clip(plane, np.percentile(plane, 0.01), np.percentile(plane, 99.9))
            low, high = plane.min(), plane.max()
            out[b, ..., c] = (plane - low) / (high - low) if high > low else 0.0
    return out


def spot_points(
    classification: np.ndarray,
    offset_regression: np.ndarray,
    threshold: float = SPOT_THRESHOLD,
    min_distance: int = SPOT_MIN_DISTANCE,
) -> np.ndarray:
    """Sub-pixel spot centres (N, 2) float64 [row, col] of ONE image's model heads.

    `classification` (H, W, 2) has P(spot) in channel 1; `offset_regression` (H, W, 2) holds
    (d-row, d-col). Peaks are `skimage.feature.peak_local_max(P, min_distance, threshold_abs)`
    with skimage's default `exclude_border` (= min_distance), exactly the library's call
    (postprocessing_utils.py:136-138); each peak (r, c) becomes (r + d-row[r, c], c + d-col[r, c])
    (postprocessing_utils.py:140-145). Order is peak_local_max's (strongest first).
    """
    classification = np.asarray(classification)
    offset_regression = np.asarray(offset_regression)
    if classification.ndim != 3 or classification.shape[-1] < 2:
        raise ValueError(f"classification head must be (height, width, 2); got shape {classification.shape}")
    if offset_regression.shape[:2] != classification.shape[:2] or offset_regression.shape[-1] < 2:
        raise ValueError(
            f"offset_regression head {offset_regression.shape} does not match classification {classification.shape}"
        )
    peaks = peak_local_max(classification[..., 1], min_distance=min_distance, threshold_abs=threshold)
    if len(peaks) == 0:
        return np.zeros((0, 2), dtype=np.float64)
    rows, cols = peaks[:, 0], peaks[:, 1]
    points = np.empty((len(peaks), 2), dtype=np.float64)
    points[:, 0] = rows + offset_regression[rows, cols, 0].astype(np.float64)
    points[:, 1] = cols + offset_regression[rows, cols, 1].astype(np.float64)
    return points


def spot_points_batch(
    classification: np.ndarray,
    offset_regression: np.ndarray,
    threshold: float = SPOT_THRESHOLD,
    min_distance: int = SPOT_MIN_DISTANCE,
) -> list[np.ndarray]:
    """`spot_points` for each image of (B, H, W, 2) heads; one (N_i, 2) array per image.

    A list, not the library's `np.array(list)` (which becomes an object array when the N_i differ,
    postprocessing_utils.py:147).
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"spot threshold must be between 0 and 1; got {threshold}")  # spot_detection.py:279-280
    return [
        spot_points(classification[i], offset_regression[i], threshold, min_distance)
        for i in range(np.shape(classification)[0])
    ]


def assign_spots(coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cell id under each spot: (N, K) int64 for labels (H, W) (K=1) or (H, W, K).

    The kiosk looks up `labels[int(row), int(col), k]` (polaris_consumer.py:274-276): `int`
    truncates toward zero, so a spot at row -0.4 reads row 0. A spot whose truncated index falls
    outside the image reads 0 (background) here; the kiosk would wrap a negative index around to
    the far edge or raise IndexError past the end.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[..., None]
    if labels.ndim != 3:
        raise ValueError(f"labels must be (height, width) or (height, width, channels); got shape {labels.shape}")
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    rows = np.trunc(coords[:, 0])
    cols = np.trunc(coords[:, 1])
    height, width = labels.shape[:2]
    inside = np.isfinite(rows) & np.isfinite(cols) & (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    out = np.zeros((len(coords), labels.shape[-1]), dtype=np.int64)
    r, c = rows[inside].astype(np.intp), cols[inside].astype(np.intp)
    out[inside] = labels[r, c, :].astype(np.int64)
    return out


def spots_csv(coords: np.ndarray, labels: np.ndarray | None = None) -> str:
    """The polaris CSV text for one image, byte for byte as the kiosk writes it.

    Header `x,y` (no labels: `segmentation_type=none`, polaris_consumer.py:316-322), else
    `x,y,cellID0` or, for two label channels, `x,y,cellID0,cellID1` (polaris_consumer.py:265-279).
    One row per spot in detection order: x = col, y = row as Python floats (`str` of a float64,
    as `csv.writer` prints numpy floats), then the integer cell ids. Lines end in CRLF, the
    `csv` module's default that the kiosk keeps (it opens the file with newline='').
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=",")
    if labels is None:
        writer.writerow(["x", "y"])
        for row, col in coords:
            writer.writerow([float(col), float(row)])
        return buffer.getvalue()
    labels = np.asarray(labels)
    channels = 1 if labels.ndim == 2 else labels.shape[-1]
    if channels not in (1, 2):
        raise ValueError(f"spot labels must have 1 or 2 channels; got {channels}")
    writer.writerow(["x", "y", "cellID0", "cellID1"][: 2 + channels])
    cells = assign_spots(coords, labels)
    for (row, col), ids in zip(coords, cells):
        writer.writerow([float(col), float(row), *(int(i) for i in ids)])
    return buffer.getvalue()


def _overlay_index(image: np.ndarray, coords: np.ndarray, radius: int) -> np.ndarray:
    """Palette indices (H, W) uint8: grey levels 0.._GREY_LEVELS-1, _SPOT_INDEX on spots."""
    plane = np.asarray(image, dtype=np.float32)
    if plane.ndim == 3 and plane.shape[-1] == 1:
        plane = plane[..., 0]
    if plane.ndim != 2:
        raise ValueError(f"overlay image must be 2-D (height, width); got shape {np.shape(image)}")
    # display range from a 1/16 subsample: a picture for a person, not a measurement
    sample = plane[::4, ::4]
    low, high = np.percentile(sample, [0.1, 99.9]) if sample.size else (0.0, 0.0)
    index = np.zeros(plane.shape, dtype=np.uint8)
    if high > low:
        scaled = (plane - low) * ((_GREY_LEVELS - 1) / (high - low))
        np.clip(scaled, 0, _GREY_LEVELS - 1, out=scaled)
        np.add(scaled, 0.5, out=scaled)
        index[...] = scaled  # truncation of x + 0.5: round to the nearest level
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    centres = np.floor(coords[np.isfinite(coords).all(axis=1)] + 0.5).astype(np.int64)
    height, width = plane.shape
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r, c = centres[:, 0] + dr, centres[:, 1] + dc
            ok = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            index[r[ok], c[ok]] = _SPOT_INDEX
    return index


def spots_overlay(image: np.ndarray, coords: np.ndarray, radius: int = 1) -> np.ndarray:
    """RGB uint8 (H, W, 3) of what the PNG shows: the image in grey (its 0.1-99.9 percentile range,
    _GREY_LEVELS levels) with a magenta (2*radius+1)-pixel square on each spot (the kiosk draws
    magenta dots)."""
    return np.asarray(_PALETTE, dtype=np.uint8).reshape(-1, 3)[_overlay_index(image, coords, radius)]


def spots_overlay_png(image: np.ndarray, coords: np.ndarray, radius: int = 1) -> bytes:
    """PNG bytes of `spots_overlay`, as an 8-bit palette image (like utils/overlay.py: a few grey
    levels plus one colour keeps zlib fast and the file small; this runs once per job)."""
    from PIL import Image

    index = np.ascontiguousarray(_overlay_index(image, coords, radius))
    picture = Image.frombytes("P", (index.shape[1], index.shape[0]), index.tobytes())
    picture.putpalette(_PALETTE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
