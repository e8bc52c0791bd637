"""Choose the chest radiograph gate's thresholds from out-of-fold predictions on real films:
every film scored by the cross-validation model that never saw its patient, so the gate sees
what the shipped model will do on new patients, not on its own training films.

Each threshold sits beyond the most extreme value of the well-segmented films (Dice >=
``good_dice``) by a margin, then is clipped to a range a reviewer would defend, so 57 films
can neither switch a check off nor make it refuse ordinary films.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worker.models._nn.predictor import UNetPredictor
from worker.models.lung_cxr.fields import lung_fields
from worker.models.lung_cxr.films import Film, FilmArrays
from worker.models.lung_cxr.gate import DEFAULT_THRESHOLDS, Signals, Thresholds, field_signals

logger = logging.getLogger(__name__)

#: Defensible ranges for each threshold (lowest, highest).
BOUNDS = {
    "min_side_purity": (0.8, 0.98),
    "min_area_fraction": (0.05, 0.2),
    "max_area_fraction": (0.4, 0.7),
    "min_right_left_ratio": (0.4, 0.9),
    "max_right_left_ratio": (1.3, 2.5),
    "max_border_fraction": (0.005, 0.1),
    "min_confidence": (0.7, 0.95),
    "max_fragment_ratio": (0.02, 0.2),
}


def _clip(name: str, value: float) -> float:
    lo, hi = BOUNDS[name]
    return float(min(max(value, lo), hi))


def out_of_fold_signals(
    films: Sequence[Film], arrays: FilmArrays, fold_weights: Sequence[Path], device: str = "cpu"
) -> list[Signals]:
    """Signals of every film from the fold checkpoint that held its patient out (each
    checkpoint's metadata ``test`` lists its films)."""
    index = {film.name: i for i, film in enumerate(films)}
    found: dict[int, Signals] = {}
    for weights in fold_weights:
        predictor = UNetPredictor(weights, device)
        for name in predictor.metadata["test"]:
            i = index[name]
            (prob,) = predictor.probabilities([arrays.images[i]])
            found[i] = field_signals(lung_fields(prob, patient_left_on_image_right=True))
    return [found[i] for i in sorted(found)]


def fit_thresholds(good: Sequence[Signals]) -> Thresholds:
    """Thresholds from the signals of well-segmented films (see module doc)."""
    if len(good) < 10:
        raise ValueError(f"only {len(good)} well-segmented films: too few to set a gate")

    def column(key: str) -> np.ndarray:
        return np.array([getattr(s, key) for s in good], dtype=np.float64)

    return Thresholds(
        min_side_purity=_clip("min_side_purity", column("side_purity").min() - 0.02),
        min_area_fraction=_clip("min_area_fraction", column("area_fraction").min() * 0.75),
        max_area_fraction=_clip("max_area_fraction", column("area_fraction").max() * 1.25),
        min_right_left_ratio=_clip("min_right_left_ratio", column("right_left_ratio").min() * 0.85),
        max_right_left_ratio=_clip("max_right_left_ratio", column("right_left_ratio").max() * 1.15),
        max_border_fraction=_clip(
            "max_border_fraction", column("border_fraction").max() * 1.5 + 0.002
        ),
        min_confidence=_clip("min_confidence", column("confidence").min() - 0.02),
        max_fragment_ratio=_clip("max_fragment_ratio", column("fragment_ratio").max() * 1.5 + 0.01),
    )


def gate_entry(
    oof: Sequence[Signals], dice: Sequence[float], good_dice: float = 0.9
) -> dict[str, Any]:
    """The ``quality_gate`` metadata: thresholds, how they were fitted, the share of all
    out-of-fold films each check and the whole gate would flag."""
    from worker.models.lung_cxr.gate import reasons

    good = [s for s, d in zip(oof, dice, strict=True) if d >= good_dice]
    try:
        thresholds = fit_thresholds(good)
        how = f"{len(good)} of {len(oof)} films (out-of-fold, Dice >= {good_dice})"
    except ValueError as exc:
        logger.warning("quality gate left at its defaults: %s", exc)
        thresholds, how = DEFAULT_THRESHOLDS, f"defaults ({exc})"
    flagged = [bool(reasons(s, thresholds)) for s in oof]
    return {
        **thresholds.as_dict(),
        "fitted_on": how,
        "rule": "the extreme of the well-segmented films plus a margin, clipped to BOUNDS",
        "out_of_fold_flagged": f"{sum(flagged)} of {len(oof)}",
    }
