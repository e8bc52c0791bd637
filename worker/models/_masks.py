"""2D mask operations by OpenCV that give exactly what their scipy.ndimage originals give,
shared by the models' post-processing (fetal head, lung CT, chest film).

OpenCV is imported inside each function: the gateway imports the models' routing and has no
OpenCV.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Mask = npt.NDArray[np.bool_]


def fill_holes(mask: Mask) -> Mask:
    """``scipy.ndimage.binary_fill_holes(mask)``: the background not 4-connected to the
    image's border joins the mask, by flooding the border's background in a padded copy."""
    import cv2

    plane = np.ascontiguousarray(mask).view(np.uint8)
    padded = cv2.copyMakeBorder(plane, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)
    filled: Mask = padded[1:-1, 1:-1] != 2
    return filled


def label(mask: Mask) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """``scipy.ndimage.label(mask)`` (4-connected): the same numbers, by OpenCV, and the
    pixels in each component 1..count. OpenCV's own statistics cost more than the labelling
    at 4-connectivity (17 ms against 3 ms on a chest film's lung box, 2.6 against 1.0 ms on
    a US frame, AMD EPYC); a bincount of the labels gives the same sizes."""
    import cv2

    plane = np.ascontiguousarray(mask).view(np.uint8)
    count, labels = cv2.connectedComponents(plane, connectivity=4, ltype=cv2.CV_32S)
    sizes: npt.NDArray[np.int64] = np.bincount(labels.ravel(), minlength=count)[1:]
    return np.asarray(labels, dtype=np.int32), sizes


def closing(mask: Mask, iterations: int) -> Mask:
    """``scipy.ndimage.binary_closing(mask, np.ones((3, 3)), iterations)``: the 3x3 square
    ``iterations`` times is one square of side ``2 * iterations + 1``, and outside the image
    is background for the dilation and the erosion alike, as in scipy (about ten times
    faster)."""
    import cv2

    kernel = np.ones((2 * iterations + 1,) * 2, dtype=np.uint8)
    zero = cv2.BORDER_CONSTANT
    dilated = cv2.dilate(mask.view(np.uint8), kernel, borderType=zero, borderValue=0)
    closed: Mask = cv2.erode(dilated, kernel, borderType=zero, borderValue=0).view(bool)
    return closed
