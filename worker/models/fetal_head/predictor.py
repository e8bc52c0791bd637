"""Fetal head inference: U-Net probabilities → clean mask → ellipse → quality per frame."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from worker.models._masks import fill_holes, label
from worker.models._nn.predictor import UNetPredictor
from worker.models.fetal_head.biometry import Ellipse, fit_ellipse_mm
from worker.models.fetal_head.gate import Signals, Thresholds, quality_score, reasons, signals

logger = logging.getLogger(__name__)


def clean_mask(
    probability: npt.NDArray[np.float32], threshold: float = 0.5
) -> npt.NDArray[np.bool_]:
    """Largest connected component (4-connected, ties to the one met first in raster order,
    as ``ndimage.label`` numbers them) with holes filled: exactly ``binary_fill_holes`` of
    the largest ``ndimage.label`` component, by OpenCV.

    Labels and areas by ``_masks.label``. The holes are filled inside the component's
    bounding box only: every pixel outside the box is background that reaches the image
    border in a straight line, so the background reaching the box's edge is not a hole
    (``_masks.fill_holes``, one flood fill)."""
    mask = np.ascontiguousarray(probability >= threshold)
    labels, areas = label(mask)
    if areas.size == 0:
        return mask
    largest = np.flatnonzero(areas == areas.max()) + 1
    number = int(largest[0])
    if len(largest) > 1:  # a tie: the component scipy numbers first
        number = int(min(largest, key=lambda n: int(np.argmax(labels.ravel() == n))))
    component = labels == number
    rows = np.flatnonzero(component.any(axis=1))
    cols = np.flatnonzero(component.any(axis=0))
    box = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    filled = np.zeros_like(mask)
    filled[box] = fill_holes(component[box])
    return filled


@dataclass
class FrameResult:
    mask: npt.NDArray[np.bool_]
    ellipse: Ellipse | None  # in mm (or pixels when spacing is (1, 1))
    quality: float  # 0..1, ranks the frames of a cine (gate.quality_score)
    signals: Signals | None = None  # the quality gate's signals; None: no head
    review: list[str] = field(default_factory=list)  # why the gate refused it; empty: accepted


class FetalHeadPredictor(UNetPredictor):
    """Fetal head masks, ellipses and the quality gate's verdict per frame.

    A checkpoint whose config says ``flip_tta`` averages each frame's probabilities with its
    mirror image's; its metadata's ``quality_gate`` holds the gate's thresholds.
    """

    def __init__(self, weights: Path, device: str = "cpu", batch_size: int | None = None) -> None:
        super().__init__(weights, device, batch_size)
        self.flip_tta = bool(self.metadata["config"].get("flip_tta", False))
        self.thresholds = Thresholds.from_metadata(self.metadata.get("quality_gate"))

    @torch.inference_mode()
    def forward(self, inputs: Sequence[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
        plain = super().forward(inputs)
        if not self.flip_tta:
            return plain
        mirrored = super().forward([np.ascontiguousarray(x[:, ::-1]) for x in inputs])
        return [
            np.asarray((p + m[:, ::-1]) / 2, dtype=np.float32)
            for p, m in zip(plain, mirrored, strict=True)
        ]

    def predict(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        spacing_mm: tuple[float, float] = (1.0, 1.0),
        *,
        calibrated: bool = True,
    ) -> list[FrameResult]:
        probabilities = self.probabilities(images)
        return self.measure(probabilities, spacing_mm, calibrated=calibrated, images=images)

    def measure(
        self,
        probabilities: Sequence[npt.NDArray[np.float32]],
        spacing_mm: tuple[float, float],
        *,
        calibrated: bool = True,
        images: Sequence[npt.NDArray[np.uint8]] | None = None,
    ) -> list[FrameResult]:
        """Post-processing of full-size probability maps: mask, ellipse, gate. ``calibrated``
        False: the spacing is a stand-in, so the HC range is not checked. ``images``: the
        frames themselves, for the gate's skull echo (not judged without them)."""
        results: list[FrameResult] = []
        for k, prob in enumerate(probabilities):
            mask = clean_mask(prob)
            ellipse = fit_ellipse_mm(mask, spacing_mm) if mask.any() else None
            image = images[k] if images is not None else None
            found = signals(prob, mask, ellipse, spacing_mm, image=image)
            hc = ellipse.circumference if ellipse is not None and calibrated else None
            results.append(
                FrameResult(
                    mask, ellipse, quality_score(found), found, reasons(found, hc, self.thresholds)
                )
            )
        return results
