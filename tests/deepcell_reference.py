"""Slow, obviously-faithful reference of deepcell-toolbox's deep watershed (the test oracle).

A line-by-line restatement of deepcell-toolbox 0.12.1 `deep_watershed.py:154-203` and
`utils.py` erode_edges (L41-65) / fill_holes (L660-687) with plain scikit-image calls, for
2-D (B, X, Y, C) heads. The fast implementation in redis_consumer/deepcell/watershed.py must
give the same labels.

Size thresholds: the toolbox calls `remove_small_objects(min_size=t)` and
`remove_small_holes(area_threshold=t)`, which removed/filled sizes *below* t in the
scikit-image releases it ran on (<= 0.25). scikit-image 0.26 maps those deprecated names to
the inclusive `max_size`, so the oracle spells the old meaning out as `max_size=t - 1`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as nd
from skimage.feature import peak_local_max
from skimage.measure import label, regionprops
from skimage.morphology import (
    dilation,
    disk,
    footprint_rectangle,
    h_maxima,
    remove_small_holes,
    remove_small_objects,
)
from skimage.segmentation import find_boundaries, relabel_sequential, watershed


def reference_erode_edges(mask, erosion_width):
    new_mask = np.copy(mask)
    for _ in range(erosion_width):
        boundaries = find_boundaries(new_mask, mode="inner")
        new_mask[boundaries > 0] = 0
    return new_mask


def reference_fill_holes(label_img, size=10, connectivity=1):
    output_image = np.copy(label_img)
    for prop in regionprops(np.squeeze(label_img.astype("int")), cache=False):
        if prop.euler_number < 1:
            patch = output_image[prop.slice]
            filled = remove_small_holes(patch == prop.label, max_size=size - 1,
                                        connectivity=connectivity)
            output_image[prop.slice] = np.where(filled, prop.label, patch)
    return output_image


def reference_markers(maxima, radius, maxima_threshold, maxima_algorithm="h_maxima",
                      exclude_border=False):
    if maxima_algorithm == "peak_local_max":
        coords = peak_local_max(maxima, min_distance=radius, threshold_abs=maxima_threshold,
                                exclude_border=exclude_border)
        markers = np.zeros_like(maxima)
        markers[tuple(coords[:, i] for i in range(coords.shape[1]))] = 1
        return markers
    return h_maxima(image=maxima, h=maxima_threshold, footprint=disk(radius))


def reference_deep_watershed(outputs, radius=10, maxima_threshold=0.1, interior_threshold=0.01,
                             maxima_smooth=0, interior_smooth=1, maxima_index=0,
                             interior_index=-1, label_erosion=0, small_objects_threshold=0,
                             fill_holes_threshold=0, pixel_expansion=None,
                             maxima_algorithm="h_maxima", exclude_border=False):
    maximas, interiors = outputs[maxima_index], outputs[interior_index]
    label_images = []
    for maxima, interior in zip(maximas, interiors):
        maxima = nd.gaussian_filter(maxima[..., 0], maxima_smooth)
        interior = nd.gaussian_filter(interior[..., 0], interior_smooth)
        if pixel_expansion:
            interior = dilation(interior, footprint=footprint_rectangle(
                (pixel_expansion * 2 + 1,) * 2))
        markers = reference_markers(maxima, radius, maxima_threshold, maxima_algorithm,
                                    exclude_border)
        markers = label(markers)
        label_image = watershed(-1 * interior, markers, mask=interior > interior_threshold,
                                watershed_line=0)
        if label_erosion:
            label_image = reference_erode_edges(label_image, label_erosion)
        if small_objects_threshold:
            label_image = remove_small_objects(label_image, max_size=small_objects_threshold - 1)
        if fill_holes_threshold > 0:
            label_image = reference_fill_holes(label_image, size=fill_holes_threshold)
        label_image, _, _ = relabel_sequential(label_image)
        label_images.append(label_image)
    return np.expand_dims(np.stack(label_images, axis=0), axis=-1)
