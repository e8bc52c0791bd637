"""Fetal head inference: U-Net probabilities → clean mask → ellipse → quality per frame."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._nn.predictor import UNetPredictor
from worker.models.fetal_head.biometry import Ellipse, ellipse_mask, fit_ellipse_mm

logger = logging.getLogger(__name__)


def clean_mask(
    probability: npt.NDArray[np.float32], threshold: float = 0.5
) -> npt.NDArray[np.bool_]:
    """Largest connected component with holes filled.

    The holes are filled inside the component's bounding box only (padded by one pixel):
    every pixel outside the box is background that reaches the image border in a straight
    line, so the result is exactly ``binary_fill_holes`` on the whole image, at a fraction
    of the cost.
    """
    mask = probability >= threshold
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    number = 1 if count == 1 else int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    box = ndimage.find_objects(labels, max_label=number)[number - 1]
    assert box is not None  # the component has pixels
    crop = np.pad(labels[box] == number, 1)
    filled = np.zeros_like(mask)
    filled[box] = fill_holes(crop)[1:-1, 1:-1]
    return filled


def fill_holes(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """``ndimage.binary_fill_holes`` (default 4-connectivity) by one labelling pass: a hole
    is a background component that touches no edge of the array."""
    background, _ = ndimage.label(~mask)
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(int(background.max()) + 1, dtype=bool)
    outside[edges] = True
    outside[0] = True  # label 0: the mask itself
    holes = ~outside[background]
    filled: npt.NDArray[np.bool_] = mask | holes
    return filled


@dataclass
class FrameResult:
    mask: npt.NDArray[np.bool_]
    ellipse: Ellipse | None  # in mm (or pixels when spacing is (1, 1))
    quality: float  # 0..1: confidence x how elliptical the mask is


class FetalHeadPredictor(UNetPredictor):
    """Fetal head masks, ellipses and a quality score per frame."""

    def predict(
        self, images: Sequence[npt.NDArray[np.uint8]], spacing_mm: tuple[float, float] = (1.0, 1.0)
    ) -> list[FrameResult]:
        return self.measure(self.probabilities(images), spacing_mm)

    def measure(
        self, probabilities: Sequence[npt.NDArray[np.float32]], spacing_mm: tuple[float, float]
    ) -> list[FrameResult]:
        """Post-processing of full-size probability maps: mask, ellipse, quality."""
        results: list[FrameResult] = []
        for prob in probabilities:
            mask = clean_mask(prob)
            ellipse = fit_ellipse_mm(mask, spacing_mm) if mask.any() else None
            results.append(FrameResult(mask, ellipse, _quality(prob, mask, ellipse, spacing_mm)))
        return results


def _quality(
    prob: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    ellipse: Ellipse | None,
    spacing_mm: tuple[float, float],
) -> float:
    if ellipse is None or not mask.any():
        return 0.0
    confidence = float(np.mean(np.abs(prob - 0.5)) * 2)
    fitted = ellipse_mask(
        mask.shape, (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle_deg), spacing_mm
    )
    union = np.logical_or(fitted, mask).sum()
    agreement = float(np.logical_and(fitted, mask).sum() / union) if union else 0.0
    return confidence * agreement
