"""Fetal brain inference on one stack: normalise, per-slice U-Net, largest 3D component with
holes filled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from worker.models._nn.predictor import UNetPredictor

Mask = npt.NDArray[np.bool_]


def normalise_stack(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """A stack to uint8 by its 99.5th percentile (MR intensities have no fixed scale)."""
    data = np.asarray(image, dtype=np.float32)
    top = float(np.percentile(data, 99.5)) or 1.0
    scaled: npt.NDArray[np.uint8] = np.clip(data / top * 255.0, 0, 255).astype(np.uint8)
    return scaled


def clean_volume(probabilities: npt.NDArray[np.float32], threshold: float = 0.5) -> Mask:
    """Largest 3D connected component, holes filled in 3D and slice by slice."""
    mask = probabilities >= threshold
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        return mask
    largest = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    filled = ndimage.binary_fill_holes(largest)
    per_slice: Mask = np.stack([ndimage.binary_fill_holes(s) for s in filled]).astype(bool)
    return per_slice


@dataclass(frozen=True)
class StackPrediction:
    raw: Mask  # every voxel above the threshold, before the clean-up
    mask: Mask  # the cleaned brain


def segment_stack(
    predictor: UNetPredictor, image: npt.NDArray[Any], threshold: float = 0.5
) -> StackPrediction:
    """The cleaned mask, and the raw one the quality gate compares it with."""
    probabilities = np.stack(predictor.probabilities(list(normalise_stack(image))))
    return StackPrediction(probabilities >= threshold, clean_volume(probabilities, threshold))


def predict_stack(predictor: UNetPredictor, image: npt.NDArray[Any]) -> Mask:
    return segment_stack(predictor, image).mask
