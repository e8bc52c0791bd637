"""The 8-bit images the fetal head network reads."""

from __future__ import annotations

import numpy as np

from worker.models.fetal_head.images import as_uint8


def test_8_bit_frames_keep_their_values() -> None:
    frames = np.array([[[0, 17], [128, 255]], [[3, 4], [5, 6]]], dtype=np.float32)
    images = as_uint8(frames)
    assert [image.dtype for image in images] == [np.uint8, np.uint8]
    assert images[0].tolist() == [[0, 17], [128, 255]]
    assert images[1].tolist() == [[3, 4], [5, 6]]
    assert all(image.flags.c_contiguous for image in images)


def test_other_ranges_are_stretched_over_the_whole_series() -> None:
    frames = np.array([[[-1000, 0]], [[500, 1000]]], dtype=np.float32)
    images = as_uint8(frames)
    assert images[0].tolist() == [[0, 127]]
    assert images[1].tolist() == [[191, 255]]


def test_a_flat_series_out_of_range_does_not_divide_by_zero() -> None:
    images = as_uint8(np.full((1, 2, 2), 4000, dtype=np.float32))
    assert images[0].tolist() == [[0, 0], [0, 0]]
