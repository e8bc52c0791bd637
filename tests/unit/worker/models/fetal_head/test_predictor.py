"""The fast fetal head post-processing gives exactly what the whole-image versions give."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._masks import fill_holes
from worker.models.fetal_head.biometry import ellipse_mask
from worker.models.fetal_head.predictor import clean_mask


def _reference_clean_mask(probability: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    mask = probability >= 0.5
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    filled: npt.NDArray[np.bool_] = ndimage.binary_fill_holes(largest)
    return filled


def _reference_ellipse_mask(
    shape: tuple[int, int],
    ellipse: tuple[float, float, float, float, float],
    spacing: tuple[float, float],
) -> npt.NDArray[np.bool_]:
    cx, cy, a, b, angle = ellipse
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    xx *= spacing[1]
    yy *= spacing[0]
    t = math.radians(angle)
    u = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
    v = -(xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
    inside: npt.NDArray[np.bool_] = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return inside


def _random_probability(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    shape = tuple(int(n) for n in rng.integers(1, 50, 2))
    noise = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.0, 3.0))
    span = max(float(noise.max() - noise.min()), 1e-9)
    scaled: npt.NDArray[np.float32] = ((noise - noise.min()) / span * rng.uniform(0.3, 1.5)).astype(
        np.float32
    )
    return scaled


def test_fill_holes_and_clean_mask_match_scipy_on_random_masks() -> None:
    rng = np.random.default_rng(9)
    for _ in range(500):
        probability = _random_probability(rng)
        mask = probability >= 0.5
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
        assert np.array_equal(clean_mask(probability), _reference_clean_mask(probability))


def test_ring_hole_is_filled_and_border_background_is_not() -> None:
    probability = np.zeros((9, 12), dtype=np.float32)
    probability[2:7, 0:5] = 1.0  # touches the left edge
    probability[4, 2] = 0.0  # a hole
    probability[3:6, 7:11] = 0.9  # a smaller blob: dropped
    cleaned = clean_mask(probability)
    assert cleaned[4, 2] and cleaned[2:7, 0:5].all()
    assert cleaned.sum() == 25


def test_ellipse_mask_matches_the_whole_grid_computation() -> None:
    rng = np.random.default_rng(10)
    for _ in range(500):
        shape = (int(rng.integers(1, 60)), int(rng.integers(1, 60)))
        spacing = (float(rng.uniform(0.05, 2.0)), float(rng.uniform(0.05, 2.0)))
        ellipse = (
            float(rng.uniform(-20, 80)),
            float(rng.uniform(-20, 80)),
            float(rng.uniform(0.1, 40)),
            float(rng.uniform(0.1, 40)),
            float(rng.uniform(0, 360)),
        )
        expected = _reference_ellipse_mask(shape, ellipse, spacing)
        assert np.array_equal(ellipse_mask(shape, ellipse, spacing), expected)


def test_of_two_equal_components_the_first_in_raster_order_is_kept() -> None:
    probability = np.zeros((20, 30), dtype=np.float32)
    probability[12:17, 2:7] = 1.0  # lower, but further left
    probability[3:8, 20:25] = 1.0  # met first in raster order
    kept = clean_mask(probability)
    assert kept[5, 22] and not kept[14, 4]
    assert np.array_equal(kept, _reference_clean_mask(probability))
