"""The imaged region's fast path (OpenCV closing, hull of the row ends) gives exactly the
region of the plain recipe: scipy's iterated 3x3 closing and the hull of every pixel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydicom import Dataset
from scipy import ndimage

from worker.models.fetal_head import fan
from worker.models.fetal_head.images import as_uint8
from worker.models.fetal_head.predictor import clean_mask
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.loading import load_series


def _reference(image: npt.NDArray[np.uint8], ds: Dataset) -> npt.NDArray[np.bool_]:
    rectangles = fan.region_rectangles(ds, (image.shape[0], image.shape[1]))
    echoes = (image > 8) & rectangles
    closed = ndimage.binary_closing(echoes, structure=np.ones((3, 3)), iterations=6)
    largest = clean_mask(closed.astype(np.float32))
    if not largest.any():
        return rectangles
    hull = np.zeros(largest.shape, dtype=np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(largest.astype(np.uint8))), 1)
    region: npt.NDArray[np.bool_] = hull.astype(bool) & rectangles
    return region


@pytest.mark.parametrize("seed", [3, 11, 27])
@pytest.mark.parametrize("rgb", [False, True])
def test_the_region_of_a_phantom_frame_is_the_reference_one(
    tmp_path: Path, seed: int, rgb: bool
) -> None:
    path = tmp_path / "us.dcm"
    write_us_phantom(path, seed, rgb=rgb)
    series = load_series([path])
    image, ds = as_uint8(series.frames)[0], series.datasets[0]
    np.testing.assert_array_equal(fan.imaged_region(image, ds), _reference(image, ds))


def test_a_sector_cut_by_the_frame_and_speckle_at_the_border() -> None:
    """The closing's border: outside the frame is background for both of its steps."""
    rng = np.random.default_rng(5)
    image = np.zeros((120, 160), dtype=np.uint8)
    cv2.ellipse(image, (80, -20), (130, 130), 0, 45, 135, 200, -1)  # a fan off the top
    image[rng.random(image.shape) < 0.15] = 0  # dropped echoes, the closing's work
    image[115:, 2:6] = 255  # a ruler mark by the bottom edge, apart from the fan
    region = fan.imaged_region(image, Dataset())
    np.testing.assert_array_equal(region, _reference(image, Dataset()))
    assert region[60, 80] and not region[117, 4]


def test_row_ends_hold_the_mask_within_their_hull() -> None:
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:40, 20:45] = True
    mask[25, 5:55] = True
    points = fan.row_ends(mask).reshape(-1, 2)
    assert {(5, 25), (54, 25), (20, 10), (44, 39)} <= {tuple(p) for p in points}
    assert len(points) == 2 * 30
