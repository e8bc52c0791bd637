"""Chest radiograph pixels → a display-like uint8 image both networks read, and back again.

Every source (12/15/16-bit CR/DX, MONOCHROME1 or 2, 8-bit PNG) is brought to the same
convention: dense = bright, the 0.5-99.5 percentile range stretched over 0-255.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from scipy import ndimage

NET_SIZE = (256, 256)  # rows, columns of both networks' input


def display_uint8(
    frame: npt.NDArray[np.floating | np.integer], *, monochrome1: bool
) -> npt.NDArray[np.uint8]:
    """Invert MONOCHROME1, then stretch the 0.5-99.5 percentiles to 0-255."""
    values = np.asarray(frame, dtype=np.float32)
    if monochrome1:
        values = -values
    lo, hi = np.percentile(values, [0.5, 99.5])
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


def split_lungs(
    mask: npt.NDArray[np.bool_], *, patient_left_on_image_right: bool = True
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(right lung, left lung) from a lung-field mask: the two largest components, each
    side by its centroid; a single merged component is cut at its narrowest central column."""
    labels, count = ndimage.label(mask)
    empty = np.zeros_like(mask)
    if count == 0:
        return empty, empty.copy()
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    parts = [labels == (int(i) + 1) for i in order[:2]]
    if len(parts) == 2 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        parts.sort(key=lambda m: float(np.nonzero(m)[1].mean()))
        image_left, image_right = parts
    else:
        only = parts[0]
        columns = np.nonzero(only.any(axis=0))[0]
        lo, hi = columns.min(), columns.max()
        width = hi - lo + 1
        centre = slice(lo + width // 3, lo + 2 * width // 3 + 1)
        counts = only.sum(axis=0)[centre]
        cut = int(centre.start + np.argmin(counts))
        image_left, image_right = only.copy(), only.copy()
        image_left[:, cut:] = False
        image_right[:, :cut] = False
    if patient_left_on_image_right:
        return image_left, image_right
    return image_right, image_left


def two_largest(prob: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Lung fields: the two largest components of the thresholded map, holes filled."""
    from worker.models.lung_ct_threshold.volume_ops import fill_holes_in_plane

    labels, count = ndimage.label(prob >= 0.5)
    if count == 0:
        return np.zeros(prob.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.zeros(count + 1, dtype=bool)
    kept[np.argsort(sizes)[::-1][:2] + 1] = True
    # binary_fill_holes as one labelling of the background (3x faster on a 2000² film).
    filled: npt.NDArray[np.bool_] = fill_holes_in_plane(kept[labels][np.newaxis])[0]
    return filled
