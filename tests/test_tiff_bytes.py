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
