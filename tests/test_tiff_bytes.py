"""utils.tiff_bytes: the very bytes tifffile.imwrite writes for the cast array."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from redis_consumer.utils.tiff_bytes import tiff_bytes


def _reference(array: np.ndarray, dtype) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(array, dtype=dtype))
    return buffer.getvalue()


@pytest.mark.parametrize("shape,source,dtype", [
    ((1024, 1024), np.int32, np.float32), ((1, 300, 257), np.int32, np.float32), ((300, 257), np.int32, np.uint16),
    ((2, 40, 30), np.int64, np.uint32), ((5, 7), np.float64, np.float32), ((1, 1), np.uint16, None),
    ((3, 4, 5, 6), np.int32, np.float32),
])
def test_same_bytes_as_tifffile_of_the_cast_array(shape, source, dtype):
    rng = np.random.default_rng(sum(shape))
    array = rng.integers(0, 70000, shape).astype(source)
    got = tiff_bytes(array, dtype)
    assert bytes(got) == _reference(array, dtype)
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(bytes(got))), array.astype(dtype or source))


def test_strided_and_non_native_sources_and_types():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 900, (1, 64, 80, 2)).astype(np.int32)
    for k in range(2):  # a channel of an interleaved (B, X, Y, K) array
        plane = labels[0, ..., k]
        assert bytes(tiff_bytes(plane, np.float32)) == _reference(plane, np.float32)
    big_endian = labels[0, ..., 0].astype(">i4")
    assert bytes(tiff_bytes(big_endian, np.float32)) == _reference(big_endian, np.float32)
    assert bytes(tiff_bytes(big_endian)) == _reference(big_endian, None)  # tifffile's own path
    flags = rng.random((9, 9)) > 0.5
    assert bytes(tiff_bytes(flags)) == _reference(flags, None)


def test_files_of_one_shape_share_the_header_not_the_pixels():
    """The header made once per (shape, dtype) fronts every later file of that size; each file
    has its own buffer."""
    rng = np.random.default_rng(7)
    arrays = [rng.integers(0, 5000, (2, 33, 47)).astype(np.int32) for _ in range(3)]
    views = [tiff_bytes(a, np.float32) for a in arrays]
    for view, array in zip(views, arrays):
        assert bytes(view) == _reference(array, np.float32)
    assert len({bytes(v) for v in views}) == 3
    assert bytes(tiff_bytes(arrays[0][0], np.uint16)) == _reference(arrays[0][0], np.uint16)
