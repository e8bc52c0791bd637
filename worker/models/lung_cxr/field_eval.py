"""Lung-field scores of one film against its expert mask, the way the service serves it: full
resolution, the two largest components, split into the patient's right and left lung.

The truth is split the same way (the masks carry both lungs in one label), so a film whose
predicted right lung lies on the truth's left lung scores ``sides_ok = False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from worker.models._nn.metrics import boundary_distances, dice
from worker.models._nn.predictor import UNetPredictor
from worker.models.lung_cxr.preprocess import split_lungs, two_largest


@dataclass(frozen=True)
class FilmRecord:
    name: str
    patient: str
    projection: str
    dice: float
    dice_right: float
    dice_left: float
    sides_ok: bool
    hausdorff_px: float | None  # pixels of the film as given
    hausdorff95_px: float | None
    width_px: int
    area_error_pct: float  # (found - truth) / truth

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lung_fields(prob: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """The served post-processing: two largest components of the map at 0.5, holes filled."""
    return two_largest(prob)


def score_film(
    found: npt.NDArray[np.bool_],
    truth: npt.NDArray[np.bool_],
    *,
    name: str,
    patient: str = "",
    projection: str = "",
) -> FilmRecord:
    right, left = split_lungs(found)
    true_right, true_left = split_lungs(truth)
    d_right, d_left = dice(right, true_right), dice(left, true_left)
    swapped = dice(right, true_left) + dice(left, true_right)
    distances = boundary_distances(found, truth)
    truth_area = max(int(truth.sum()), 1)
    return FilmRecord(
        name=name,
        patient=patient,
        projection=projection,
        dice=round(dice(found, truth), 5),
        dice_right=round(d_right, 5),
        dice_left=round(d_left, 5),
        sides_ok=bool(right.any() and left.any() and d_right + d_left > swapped),
        hausdorff_px=None if distances is None else round(distances[0], 2),
        hausdorff95_px=None if distances is None else round(distances[1], 2),
        width_px=int(truth.shape[1]),
        area_error_pct=round(100.0 * (int(found.sum()) - truth_area) / truth_area, 2),
    )


def score_films(
    predictor: UNetPredictor,
    images: Sequence[npt.NDArray[np.uint8]],
    truths: Sequence[npt.NDArray[np.bool_]],
    names: Sequence[tuple[str, str, str]],
) -> list[FilmRecord]:
    """One record per film; ``names`` = (file name, patient, projection)."""
    records = []
    for image, truth, (name, patient, projection) in zip(images, truths, names, strict=True):
        (prob,) = predictor.probabilities([image])
        records.append(
            score_film(lung_fields(prob), truth, name=name, patient=patient, projection=projection)
        )
    return records


def summarise(records: Sequence[FilmRecord]) -> dict[str, Any]:
    """Mean, worst and spread of the scores over films."""
    dices = np.array([r.dice for r in records])
    hd = np.array([r.hausdorff_px for r in records if r.hausdorff_px is not None])
    hd95 = np.array([r.hausdorff95_px for r in records if r.hausdorff95_px is not None])
    hd_pct = np.array(
        [100 * r.hausdorff_px / r.width_px for r in records if r.hausdorff_px is not None]
    )
    area = np.array([r.area_error_pct for r in records])
    worst = min(records, key=lambda r: r.dice)
    return {
        "films": len(records),
        "patients": len({r.patient for r in records}),
        "dice_mean": round(float(dices.mean()), 4),
        "dice_sd": round(float(dices.std()), 4),
        "dice_median": round(float(np.median(dices)), 4),
        "dice_min": round(float(dices.min()), 4),
        "worst_film": worst.name,
        "sides_ok": int(sum(r.sides_ok for r in records)),
        "hausdorff_px_mean": round(float(hd.mean()), 1) if hd.size else None,
        "hausdorff_px_max": round(float(hd.max()), 1) if hd.size else None,
        "hausdorff_pct_width_mean": round(float(hd_pct.mean()), 2) if hd_pct.size else None,
        "hausdorff95_px_mean": round(float(hd95.mean()), 1) if hd95.size else None,
        "area_error_pct_mean": round(float(area.mean()), 2),
        "area_error_pct_abs_mean": round(float(np.abs(area).mean()), 2),
    }
