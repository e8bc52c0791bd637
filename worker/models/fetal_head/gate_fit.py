"""Choose the quality gate's thresholds on tuning frames (never on the frames reported).

Each threshold sits at the edge of what well-measured tuning frames show (HC within
``good_mm`` of the sonographer's): the ``quantile`` of their signal on the failing side, then
clipped to a range a reviewer would defend, so a tiny tuning set can neither switch a check off
nor make it refuse ordinary frames. The outline's uncertain band is a risk, not an anomaly (the
HC error grows with it): its threshold flags the widest ``BAND_SHARE`` of all tuning frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from worker.models.fetal_head.evaluate import FrameRecord
from worker.models.fetal_head.gate import DEFAULT_THRESHOLDS, Thresholds

logger = logging.getLogger(__name__)

#: Defensible ranges for each threshold (lowest, highest).
BOUNDS = {
    "min_ellipse_iou": (0.85, 0.98),
    "max_outside_fraction": (0.01, 0.2),
    "min_confidence": (0.6, 0.95),
    "min_area_fraction": (0.002, 0.05),
    "max_area_fraction": (0.3, 0.8),
    "max_fragment_ratio": (0.02, 0.3),
    "max_boundary_band_mm": (1.0, 5.0),
}
#: The share of tuning frames whose outline band is wide enough to flag.
BAND_SHARE = 0.1


def _clip(name: str, value: float) -> float:
    lo, hi = BOUNDS[name]
    return float(min(max(value, lo), hi))


def fit_thresholds(
    records: Sequence[FrameRecord], good_mm: float = 3.0, quantile: float = 0.01
) -> Thresholds:
    good = [
        r.signals
        for r in records
        if r.signals is not None and r.hc_diff_mm is not None and abs(r.hc_diff_mm) <= good_mm
    ]
    if len(good) < 10:
        raise ValueError(f"only {len(good)} well-measured tuning frames: too few to set a gate")

    def column(key: str) -> np.ndarray:
        return np.array([s[key] for s in good], dtype=np.float64)

    bands = [r.signals.get("boundary_band_mm", 0.0) for r in records if r.signals is not None]

    q_lo, q_hi = quantile, 1 - quantile
    return Thresholds(
        min_ellipse_iou=_clip("min_ellipse_iou", np.quantile(column("ellipse_iou"), q_lo)),
        max_outside_fraction=_clip(
            "max_outside_fraction", np.quantile(column("outside_fraction"), q_hi)
        ),
        min_confidence=_clip("min_confidence", np.quantile(column("confidence"), q_lo)),
        min_area_fraction=_clip("min_area_fraction", column("area_fraction").min() * 0.5),
        max_area_fraction=_clip("max_area_fraction", column("area_fraction").max() * 1.25),
        max_fragment_ratio=_clip("max_fragment_ratio", np.quantile(column("fragment_ratio"), q_hi)),
        max_boundary_band_mm=_clip(
            "max_boundary_band_mm", np.quantile(np.asarray(bands), 1 - BAND_SHARE)
        ),
    )


def gate_entry(records: Sequence[FrameRecord], fitted_on: str) -> dict[str, Any]:
    """The ``quality_gate`` metadata entry fitted on ``records`` (frames no weights in the
    checkpoint were trained on), or the defaults when too few of them are well measured."""
    try:
        thresholds = fit_thresholds(records)
        how = f"{len(records)} {fitted_on}"
    except ValueError as exc:
        logger.warning("quality gate left at its defaults: %s", exc)
        thresholds, how = DEFAULT_THRESHOLDS, f"defaults ({exc})"
    return {
        **thresholds.as_dict(),
        "fitted_on": how,
        "rule": "1st/99th percentile of frames within 3 mm of the reference HC, clipped; "
        "the outline band at the 90th percentile of all of them",
    }
