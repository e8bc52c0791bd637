"""Chest radiograph pixels → a display-like uint8 image both networks read, and back again.

Every source (12/15/16-bit CR/DX, MONOCHROME1 or 2, 8-bit PNG) is brought to the same
convention: dense = bright, the 0.5-99.5 percentile range stretched over 0-255.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from worker.models.lung_cxr.window import windowed

NET_SIZE = (256, 256)  # rows, columns of both networks' input


def display_uint8(
    frame: npt.NDArray[np.floating | np.integer], *, monochrome1: bool
) -> npt.NDArray[np.uint8]:
    """Invert MONOCHROME1, then stretch the 0.5-99.5 percentiles to 0-255 (on a film of
    integers by its histogram and a table: worker.models.lung_cxr.window)."""
    values = np.asarray(frame, dtype=np.float32)
    if monochrome1:
        values = -values
    return windowed(values, (0.5, 99.5), _stretch)


def _stretch(
    values: npt.NDArray[np.float32], lo: np.float64, hi: np.float64
) -> npt.NDArray[np.uint8]:
    scaled = (values - lo) / max(float(hi - lo), 1e-6) * 255.0
    out: npt.NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def to_net(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    rows, cols = NET_SIZE
    resized = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(resized, dtype=np.uint8)


def mask_to_net(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """A binary mask as a soft uint8 mask (0-255) at the network size."""
    rows, cols = NET_SIZE
    soft = cv2.resize(mask.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    out: npt.NDArray[np.uint8] = np.round(soft * 255).astype(np.uint8)
    return out
