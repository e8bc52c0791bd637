"""The fetal head quality gate: reference-free signals per frame and a verdict with reasons.

A frame is accepted only when every signal is inside its threshold; otherwise the result is
``needs_review`` with one reason per failed check. The signals:

- ``ellipse_iou``: IoU of the cleaned mask with its fitted ellipse. A skull segmentation is an
  ellipse; soft tissue, a sector or half a head is not.
- ``outside_fraction``: share of the fitted ellipse's area beyond the image. A head cut by the
  frame edge has an extrapolated circumference.
- ``confidence``: mean probability inside the mask. Low when the network is unsure.
- ``area_fraction``: the ellipse's area over the frame's. A "head" filling the frame, or a speck,
  is not a biometry plane.
- ``fragment_ratio``: area of the other above-threshold components over the kept one. A scatter
  of blobs means the network found no single head.
- the HC itself, in mm, against the range a fetal head can have.

Thresholds are stored with the weights (``quality_gate`` in the checkpoint metadata), chosen on
tuning subjects by ``gate_fit``; ``DEFAULT_THRESHOLDS`` serve checkpoints without.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from worker.models._gate.thresholds import Rounded, StoredThresholds
from worker.models.fetal_head.biometry import Ellipse, ellipse_mask

#: The HC a fetal head can plausibly have (mm): below 11 weeks or beyond term is not biometry.
HC_PLAUSIBLE_MM = (40.0, 400.0)


@dataclass(frozen=True)
class Signals(Rounded):
    ellipse_iou: float
    outside_fraction: float
    confidence: float
    area_fraction: float
    fragment_ratio: float


@dataclass(frozen=True)
class Thresholds(StoredThresholds):
    # The defaults are the thresholds fitted for the shipped 2.0.0 weights (their metadata's
    # ``quality_gate``), so a checkpoint without a gate of its own gets the validated one.
    min_ellipse_iou: float = 0.9626
    max_outside_fraction: float = 0.01
    min_confidence: float = 0.95
    min_area_fraction: float = 0.0272
    max_area_fraction: float = 0.6639
    max_fragment_ratio: float = 0.02


DEFAULT_THRESHOLDS = Thresholds()


def signals(
    prob: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    ellipse: Ellipse | None,
    spacing_mm: tuple[float, float],
    threshold: float = 0.5,
) -> Signals | None:
    """The gate's signals for one frame; None when there is no head to judge."""
    if ellipse is None or not mask.any():
        return None
    row_mm, col_mm = spacing_mm
    params = (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle_deg)
    fitted = ellipse_mask(mask.shape, params, spacing_mm)
    union = int(np.logical_or(fitted, mask).sum())
    iou = float(np.logical_and(fitted, mask).sum() / union) if union else 0.0
    ellipse_px = math.pi * ellipse.a * ellipse.b / (row_mm * col_mm)
    outside = max(0.0, 1.0 - float(fitted.sum()) / ellipse_px) if ellipse_px > 0 else 1.0
    above = prob >= threshold
    others = int(above.sum()) - int((above & mask).sum())
    return Signals(
        ellipse_iou=iou,
        outside_fraction=outside,
        confidence=float(prob[mask].mean()),
        area_fraction=ellipse_px / mask.size,
        fragment_ratio=max(0, others) / max(1, int(mask.sum())),
    )


def reasons(
    s: Signals | None, hc_mm: float | None, t: Thresholds = DEFAULT_THRESHOLDS
) -> list[str]:
    """Why a frame needs review (empty: accepted). ``hc_mm`` None: uncalibrated, not checked."""
    if s is None:
        return ["no fetal head found"]
    out: list[str] = []
    if s.ellipse_iou < t.min_ellipse_iou:
        out.append(f"mask is not elliptical (fit IoU {s.ellipse_iou:.3f} < {t.min_ellipse_iou})")
    if s.outside_fraction > t.max_outside_fraction:
        out.append(
            f"head runs off the image ({s.outside_fraction:.0%} of the ellipse outside, "
            f"> {t.max_outside_fraction:.0%})"
        )
    if s.confidence < t.min_confidence:
        out.append(f"low confidence inside the head ({s.confidence:.3f} < {t.min_confidence})")
    if not t.min_area_fraction <= s.area_fraction <= t.max_area_fraction:
        out.append(
            f"head size implausible for the field of view ({s.area_fraction:.1%} of the frame, "
            f"accepted {t.min_area_fraction:.1%}-{t.max_area_fraction:.0%})"
        )
    if s.fragment_ratio > t.max_fragment_ratio:
        out.append(
            f"more than one candidate region (others {s.fragment_ratio:.0%} of the head's area)"
        )
    lo, hi = HC_PLAUSIBLE_MM
    if hc_mm is not None and not lo <= hc_mm <= hi:
        out.append(f"HC outside the plausible range ({hc_mm:.0f} mm, not {lo:.0f}-{hi:.0f} mm)")
    return out


def quality_score(s: Signals | None) -> float:
    """One number 0..1 to rank frames of a cine (higher is better)."""
    if s is None:
        return 0.0
    return s.confidence * s.ellipse_iou * (1.0 - min(1.0, s.outside_fraction))
