"""The display window by histogram and table (issue 29) gives the bytes of ``np.percentile``
and the arithmetic on every pixel: 12- and 16-bit films, signed values, MONOCHROME1, flat
images, one pixel; fractional values and NaN take the direct path."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from worker.models.lung_cxr import window
from worker.models.lung_cxr.preprocess import _stretch, display_uint8


def _direct(frame: npt.NDArray[np.generic], *, monochrome1: bool) -> npt.NDArray[np.uint8]:
    """display_uint8 as it was: np.percentile over every pixel."""
    values = np.asarray(frame, dtype=np.float32)
    if monochrome1:
        values = -values
    lo, hi = np.percentile(values, [0.5, 99.5])
    return _stretch(values, lo, hi)


def _frames(seed: int) -> list[npt.NDArray[np.generic]]:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
    smooth = np.cumsum(rng.integers(-3, 4, size=shape), axis=1)  # a few values many times
    return [
        rng.integers(0, 4096, size=shape).astype(np.float32),  # 12 bits, after decoding
        rng.integers(0, 65536, size=shape).astype(np.uint16),  # 16 bits, as stored
        rng.integers(-1024, 3072, size=shape).astype(np.float32),  # signed
        smooth.astype(np.float32),
        np.full(shape, 7.0, dtype=np.float32),  # flat
        rng.normal(100.0, 30.0, size=shape).astype(np.float32),  # fractional: direct path
    ]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("monochrome1", [False, True])
def test_table_gives_the_bytes_of_the_direct_window(seed: int, monochrome1: bool) -> None:
    for frame in _frames(seed):
        expected = _direct(frame, monochrome1=monochrome1)
        assert np.array_equal(display_uint8(frame, monochrome1=monochrome1), expected)


def test_one_pixel_nan_and_wide_ranges() -> None:
    for frame in (
        np.array([[5.0]], dtype=np.float32),
        np.array([[0.0, 70000.0], [3.0, 4.0]], dtype=np.float32),  # over 16 bits: direct
        np.array([[2.0**25, 2.0**25 + 2]], dtype=np.float32),  # beyond float32's integers
    ):
        assert np.array_equal(
            display_uint8(frame, monochrome1=False), _direct(frame, monochrome1=False)
        )
    with_nan = np.array([[1.0, np.nan], [3.0, 4.0]], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(
            display_uint8(with_nan, monochrome1=False), _direct(with_nan, monochrome1=False)
        )


def test_numpy_histogram_past_opencv_exact_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Films of 2**24 pixels or more are counted by numpy (OpenCV's counts are float32)."""
    frame = np.random.default_rng(3).integers(0, 4096, size=(64, 80)).astype(np.float32)
    monkeypatch.setattr(window, "_EXACT_CV_COUNTS", 100)
    assert np.array_equal(display_uint8(frame, monochrome1=True), _direct(frame, monochrome1=True))
