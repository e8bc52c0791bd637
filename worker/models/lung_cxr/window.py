"""The display window of a film (the 0.5-99.5 percentile range stretched over 0-255), from a
histogram where the pixels are integers.

``np.percentile`` partitions all 4.4 M pixels of a 2000² film (40-60 ms on the build machine);
a film's pixels are integers of 12 to 16 bits (as float32 after the modality LUT), so their
histogram gives the same order statistics in a few milliseconds, and the window is then a
look-up table over the values present. Both give the bytes ``np.percentile`` and the
arithmetic on every pixel give: the percentiles are interpolated with numpy's own formula
(method "linear") and the table is that arithmetic applied to the same float32 values
(tests/unit/worker/models/lung_cxr/test_window.py). Anything else (fractional values, a
range over 16 bits, NaN) takes the direct path.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Pair = tuple[float, float]
Window = Callable[[npt.NDArray[np.float32], np.float64, np.float64], npt.NDArray[np.uint8]]

_MAX_SPAN = 1 << 16  # values in a table: 16-bit films
_EXACT_FLOAT = 1 << 24  # float32 holds every integer up to here
_EXACT_CV_COUNTS = 1 << 24  # OpenCV's histogram comes back as float32 counts


def windowed(
    values: npt.NDArray[np.float32], percentiles: Pair, window: Window
) -> npt.NDArray[np.uint8]:
    """``window(values, lo, hi)`` with ``lo, hi = np.percentile(values, percentiles)``, the
    same bytes, by a histogram and a table where the values are integers."""
    lo_value, hi_value = float(values.min()), float(values.max())
    if not (np.isfinite(lo_value) and np.isfinite(hi_value)):
        return _direct(values, percentiles, window)
    span = int(hi_value - lo_value) + 1
    if span > _MAX_SPAN or max(abs(lo_value), abs(hi_value)) >= _EXACT_FLOAT:
        return _direct(values, percentiles, window)
    offset = values - np.float32(lo_value)  # exact: integers below 2**24
    index = offset.astype(np.uint16)
    if not _integers(index, offset):  # fractional values
        return _direct(values, percentiles, window)
    counts = _histogram(index, span)
    table_values = np.arange(span, dtype=np.float32) + np.float32(lo_value)  # exact
    lo, hi = _percentiles_of(counts, table_values, percentiles)
    return _look_up(window(table_values, lo, hi), index)


def _integers(index: npt.NDArray[np.uint16], offset: npt.NDArray[np.float32]) -> bool:
    """Whether ``offset`` holds exactly the values of ``index`` (its truncation): no
    fractional value. One pass of OpenCV's largest absolute difference (1 ms on a film)
    where ``np.array_equal`` builds a boolean film first (2 ms)."""
    import cv2

    if index.ndim != 2:  # OpenCV takes planes
        return bool(np.array_equal(index, offset))
    back = index.astype(np.float32)  # exact: below 2**16
    return float(cv2.norm(back, np.ascontiguousarray(offset), cv2.NORM_INF)) == 0.0


_ROWS = 64  # rows per look-up block: its indices fit in cache


def _look_up(table: npt.NDArray[np.uint8], index: npt.NDArray[np.uint16]) -> npt.NDArray[np.uint8]:
    """``table[index]`` by blocks of rows (numpy widens the indices to 64 bits first; a
    block's stay in cache: 2.8 ms on a 2000² film against 4.8 at once)."""
    out = np.empty(index.shape, dtype=np.uint8)
    if index.ndim != 2:
        np.take(table, index, out=out)
        return out
    for start in range(0, index.shape[0], _ROWS):
        block = slice(start, start + _ROWS)
        np.take(table, index[block], out=out[block])
    return out


def _direct(
    values: npt.NDArray[np.float32], percentiles: Pair, window: Window
) -> npt.NDArray[np.uint8]:
    lo, hi = np.percentile(values, list(percentiles))
    return window(values, lo, hi)


def _histogram(index: npt.NDArray[np.uint16], span: int) -> npt.NDArray[np.int64]:
    """How many pixels hold each offset 0..span-1."""
    if index.size < _EXACT_CV_COUNTS:  # every count exact in float32; 10x np.bincount
        import cv2

        counts = cv2.calcHist([np.ascontiguousarray(index)], [0], None, [span], [0, span])
        return np.asarray(counts, dtype=np.int64).ravel()
    return np.bincount(index.ravel(), minlength=span).astype(np.int64)


def _percentiles_of(
    counts: npt.NDArray[np.int64], values: npt.NDArray[np.float32], percentiles: Pair
) -> tuple[np.float64, np.float64]:
    """``np.percentile`` (method "linear") of the pixels counted in ``counts`` (``counts[k]``
    pixels hold ``values[k]``), computed as numpy computes it from the sorted pixels."""
    n = int(counts.sum())
    quantiles = np.true_divide(np.asarray(percentiles), 100)
    virtual = (n - 1) * quantiles
    previous = np.clip(np.floor(virtual), 0, n - 1).astype(np.intp)
    following = np.minimum(previous + 1, n - 1)
    gamma = virtual - np.floor(virtual)
    # The value at sorted position r: the first bin whose running count passes r.
    ends = np.cumsum(counts)
    a = values[np.searchsorted(ends, previous, side="right")]
    b = values[np.searchsorted(ends, following, side="right")]
    diff = b - a  # float32, as numpy's _lerp
    result = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return np.float64(result[0]), np.float64(result[1])
