"""The imaged region of an ultrasound frame: where a fetal head mask may lie.

The region is the frame's SequenceOfUltrasoundRegions rectangles with 2D tissue data where the
file has them, narrowed to the fan itself: the pixels carrying echoes (above 8 of 255), closed
over small gaps, the largest component (burnt-in text and rulers stand apart), and its convex
hull (a sector is convex, and the hull takes in dark fluid at its edges). Outside it (the black
around a sector, text panels) nothing was imaged, so a mask there is not the head.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from worker.models._masks import closing
from worker.models.fetal_head.predictor import clean_mask

#: A mask with more than this share of its pixels outside the imaged region flags the result.
MAX_OUTSIDE_FAN = 0.02


def region_rectangles(ds: Dataset, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """The union of the 2D regions of SequenceOfUltrasoundRegions (RegionSpatialFormat 1);
    the whole frame when the file has none."""
    rows, cols = shape
    inside = np.zeros(shape, dtype=bool)
    for region in ds.get("SequenceOfUltrasoundRegions", []):
        if int(region.get("RegionSpatialFormat", 0) or 0) != 1:
            continue
        try:
            x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
            x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            continue
        inside[max(0, y0) : min(rows, y1 + 1), max(0, x0) : min(cols, x1 + 1)] = True
    return inside if inside.any() else np.ones(shape, dtype=bool)


def imaged_region(image: npt.NDArray[np.uint8], ds: Dataset) -> npt.NDArray[np.bool_]:
    """The fan of ``image`` inside the file's ultrasound regions (see the module)."""
    import cv2  # the gateway imports this package's routing and has no OpenCV

    rectangles = region_rectangles(ds, (image.shape[0], image.shape[1]))
    echoes = (image > 8) & rectangles
    largest = clean_mask(closing(echoes, CLOSING_ITERATIONS).astype(np.float32))
    if not largest.any():
        return rectangles
    # A sector is convex: its hull also takes in the dark fluid at its edges.
    hull = np.zeros(largest.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(row_ends(largest)), 1)
    fan: npt.NDArray[np.bool_] = hull.astype(bool) & rectangles
    return fan


#: The 3x3 closing's iterations that bridge the gaps between echoes.
CLOSING_ITERATIONS = 6


def row_ends(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int32]:
    """The first and last pixel of ``mask`` in each row, as OpenCV points (x, y): their convex
    hull is the whole mask's (every pixel lies between its row's ends), from a thousand points
    where ``findNonZero`` gives hundreds of thousands (22 ms of a frame's hull)."""
    rows = np.flatnonzero(mask.any(axis=1))
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    xs, ys = np.concatenate([first, last]), np.concatenate([rows, rows])
    return np.stack([xs, ys], axis=1).astype(np.int32).reshape(-1, 1, 2)


def outside_share(mask: npt.NDArray[np.bool_], region: npt.NDArray[np.bool_]) -> float:
    """The share of ``mask``'s pixels outside ``region``."""
    total = int(mask.sum())
    return float((mask & ~region).sum()) / total if total else 0.0
