"""Fetal brain MRI: per-slice U-Net over each stack, largest 3D component + hole filling,
brain volume (mL) from the slice positions, per-slice areas, and the quality gate's verdict
(``gate``): its reasons make the result ``needs_review``, its signals are in
``extras["quality"]``. A stack with no brain found is flagged, not failed.

Each stack (sagittal, coronal, transverse) is its own series and so its own job.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from worker.core.registry import ModelSpec
from worker.core.tags import SeriesTags
from worker.export.outputs import (
    AREA,
    MAXIMUM,
    VOLUME,
    Z_SCORE,
    MeasurementValue,
    ModelOutput,
    Population,
    Segment,
)
from worker.models.fetal_brain.card import CARD
from worker.pipeline.loading import LoadedSeries

logger = logging.getLogger(__name__)

DEFAULT_BRAIN_WEIGHTS = Path(__file__).resolve().parent / "fetal_brain_unet.pt"
PLANES = {0: "SAG", 1: "COR", 2: "TRA"}  # by the dominant axis of the slice normal (LPS)


def accepts(tags: SeriesTags) -> bool:
    if tags.modality != "MR":
        return False
    from worker.core.settings import get_settings

    text = f"{tags.series_description} {tags.body_part_examined}"
    return re.search(get_settings().fetal_brain_match, text, flags=re.IGNORECASE) is not None


class FetalBrainModel:
    def __init__(self, device: str, weights: Path | None = None) -> None:
        from worker.core.settings import get_settings
        from worker.models.fetal_brain.predict import StackSegmenter

        weights = weights or get_settings().fetal_brain_weights or DEFAULT_BRAIN_WEIGHTS
        self.segmenter = StackSegmenter(weights, device)
        self.weights_sha256 = self.segmenter.sha256

    def predict(self, series: LoadedSeries) -> ModelOutput:
        from worker.models.fetal_brain import gate
        from worker.models.fetal_brain.convention import INTRACRANIAL, VOLUME_LABELS, segment_kind
        from worker.models.fetal_brain.predict import stack_spacing
        from worker.models.fetal_head.growth import by_dates, by_dates_report

        convention = self.segmenter.convention
        geometry = series.require_geometry()
        prediction = self.segmenter.segment(series.frames, stack_spacing(geometry))
        mask = prediction.mask
        quality = gate.of_prediction(prediction, geometry)
        voxel_ml = geometry.voxel_volumes_ml()
        volume_ml = float((mask.sum(axis=(1, 2)) * voxel_ml).sum())
        pixel_mm2 = geometry.pixel_spacing[0] * geometry.pixel_spacing[1]
        areas = [round(float(n) * pixel_mm2, 1) for n in mask.sum(axis=(1, 2))]
        plane = PLANES[int(np.argmax(np.abs(geometry.normal)))]
        review = gate.reasons(quality)
        return ModelOutput(
            segments=[Segment(segment_kind(convention), mask)],
            measurements=[
                MeasurementValue(
                    "brain_volume_ml",
                    VOLUME_LABELS[convention],
                    volume_ml,
                    "mL",
                    VOLUME,
                    segment=1,
                ),
                MeasurementValue(
                    "max_slice_area_mm2",
                    "Largest brain slice area",
                    max(areas),
                    "mm2",
                    AREA,
                    segment=1,
                    derivation=MAXIMUM,  # the largest slice of the volume (SR: TID 1419)
                ),
                *_growth(
                    series,
                    volume_ml,
                    flagged=bool(review),
                    intracranial=convention == INTRACRANIAL,
                ),
            ],
            review=review,
            extras={
                "stack_plane": plane,
                "mask_convention": convention,
                "weights": self.segmenter.checkpoints,  # the result row holds the first's
                "slice_areas_mm2": areas,
                "quality": quality.as_dict() if quality else None,
                "gestational_age_by_dates": by_dates_report(
                    by_dates(series.datasets[0], series.entered_ga)
                ),
            },
        )


def _growth(
    series: LoadedSeries, volume_ml: float, flagged: bool, intracranial: bool = True
) -> list[MeasurementValue]:
    """The GA by dates (the study's entered one, else the Last Menstrual Date to the study
    date, as for the fetal head: worker.ops.dating's rule) and, unless the gate flagged the
    volume or the mask is not the intracranial volume (``convention.py``: a parenchymal mask
    would read low), its z-score in the Ren 2022 intracranial volume reference (19-37
    completed weeks); in the SR, the GA as LOINC "Gestational Age by LMP" and the z-score as
    the volume's statistical property, with the reference week's row."""
    from worker.models.fetal_brain.growth import AUTHORITY, standing
    from worker.models.fetal_head.growth import by_dates, by_dates_measurement

    dating = by_dates(series.datasets[0], series.entered_ga)
    if dating is None:
        return []
    days = dating.days
    found = [by_dates_measurement(dating)]
    where = None if flagged or not intracranial else standing(volume_ml, days)
    if where is not None:
        found.append(
            MeasurementValue(
                "brain_volume_z",
                f"Brain volume z-score (intracranial, Ren 2022, week {where.week})",
                where.z,
                "{z-score}",
                Z_SCORE,
                segment=1,
                statistic_of="brain_volume_ml",
                population=Population(
                    f"Fetal intracranial cavity volume (MRI), completed week {where.week}: "
                    f"mean {where.mean_ml:.2f} mL, SD {where.sd_ml:.2f} mL",
                    AUTHORITY,
                ),
            )
        )
    return found


def _load(device: str) -> FetalBrainModel:
    return FetalBrainModel(device)


SPEC = ModelSpec(
    name="fetal-brain-unet",
    version="1.0.0",
    queue="gpu",
    description="Fetal MR: per-slice brain U-Net, 3D clean-up, brain volume",
    accepts=accepts,
    load=_load,
    load_weights=FetalBrainModel,
    algorithm_family="ArtificialIntelligence",
    time_limit_seconds=900,
    train={
        "fetal-brain": "worker.models.fetal_brain.train:command",
        "fetal-brain-synth": "worker.models.fetal_brain.train_synth:command",
    },
    evaluate={"fetal-brain": "worker.models.fetal_brain.evaluate:command"},
    phantoms={"fetal-brain": "worker.models.fetal_brain.phantoms:command"},
    card=CARD,
)
