"""Fetal head on 2D obstetric ultrasound: U-Net skull mask → ellipse → HC, BPD, OFD, GA.

Every frame of a cine is measured; the best-quality frame is reported (and named). Without
calibration (no SequenceOfUltrasoundRegions in cm, no PixelSpacing) the sizes are reported in
pixels with a warning, and no gestational age is given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from worker.core.errors import NothingFoundError
from worker.core.registry import ModelSpec
from worker.core.tags import SeriesTags
from worker.export.outputs import (
    BIPARIETAL_DIAMETER,
    FETAL_HEAD,
    GA_BY_HC_HADLOCK,
    HEAD_CIRCUMFERENCE,
    OCCIPITOFRONTAL_DIAMETER,
    PERCENTILE,
    Z_SCORE,
    MeasurementValue,
    ModelOutput,
    Population,
    Segment,
)
from worker.models.fetal_head.card import CARD
from worker.models.fetal_head.images import as_uint8
from worker.pipeline.calibration import image_calibration
from worker.pipeline.loading import LoadedSeries

if TYPE_CHECKING:
    from worker.models.fetal_head.biometry import Biometry
    from worker.ops.dating import Dating

logger = logging.getLogger(__name__)

_FETAL_WORDS = {
    "FETAL",
    "FETUS",
    "FOETAL",
    "OB",
    "OBSTETRIC",
    "OBSTETRICS",
    "HEAD",
    "BIOMETRY",
    "HC",
    "BPD",
}
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "fetal_head_unet.pt"


def accepts(tags: SeriesTags) -> bool:
    if tags.modality != "US":
        return False
    words = set(re.split(r"[^A-Z0-9]+", f"{tags.body_part_examined} {tags.series_description}"))
    return bool(words & _FETAL_WORDS)


@dataclass
class _Prepared:
    images: list[npt.NDArray[np.uint8]]
    inputs: list[npt.NDArray[np.float32]]  # network inputs, one per frame


@dataclass
class _Forwarded:
    images: list[npt.NDArray[np.uint8]]
    small: list[npt.NDArray[np.float32]]  # probabilities at the network's size


class FetalHeadModel:
    def __init__(self, device: str, weights: Path | None = None) -> None:
        from worker.core.settings import get_settings
        from worker.models.fetal_head.predictor import FetalHeadPredictor

        weights = weights or get_settings().fetal_head_weights or DEFAULT_WEIGHTS
        self.predictor = FetalHeadPredictor(weights, device)
        self.weights_sha256 = self.predictor.sha256
        logger.info(
            "fetal head weights %s (sha256 %s…) on %s",
            weights.name,
            self.weights_sha256[:12],
            device,
        )

    def predict(self, series: LoadedSeries) -> ModelOutput:
        return self.finish(series, self.forward(self.prepare(series)))

    # The three stages of ``predict`` (worker.core.registry.StagedModel): medseg process runs
    # them in different threads, overlapping series.
    def prepare(self, series: LoadedSeries) -> _Prepared:
        images = as_uint8(series.frames)
        return _Prepared(images, self.predictor.prepare(images))

    def forward(self, prepared: _Prepared) -> _Forwarded:
        return _Forwarded(prepared.images, self.predictor.forward(prepared.inputs))

    def forward_batch(self, prepared: Sequence[_Prepared]) -> list[_Forwarded]:
        """The frames of several series in one forward pass (worker.core.registry.BatchedModel)."""
        small = self.predictor.forward_grouped([p.inputs for p in prepared])
        return [_Forwarded(p.images, s) for p, s in zip(prepared, small, strict=True)]

    def finish(self, series: LoadedSeries, raw: _Forwarded) -> ModelOutput:
        from worker.models._nn.predictor import full_size
        from worker.models.fetal_head.biometry import biometry
        from worker.models.fetal_head.fan import MAX_OUTSIDE_FAN, imaged_region, outside_share
        from worker.models.fetal_head.growth import by_dates, by_dates_report

        calibration = image_calibration(series.datasets[0])
        spacing = (calibration.row_mm, calibration.column_mm) if calibration else (1.0, 1.0)
        probabilities = [
            full_size(prob, img.shape) for img, prob in zip(raw.images, raw.small, strict=True)
        ]
        results = self.predictor.measure(
            probabilities, spacing, calibrated=bool(calibration), images=raw.images
        )
        # The best frame the quality gate accepts (the best of all, flagged, when it accepts
        # none): gate quality times how sharp the frame is around the head, so a blurred cine
        # frame loses to a sharp one the network is equally sure of.
        sharpness = [_sharpness(img, r.mask) for img, r in zip(raw.images, results, strict=True)]
        top = max(sharpness) or 1.0
        accepted = [i for i, r in enumerate(results) if not r.review]
        best = max(
            accepted or range(len(results)),
            key=lambda i: results[i].quality * sharpness[i] / top,
        )
        chosen = results[best]
        if chosen.ellipse is None:
            raise NothingFoundError("no fetal head found in any frame")
        warnings: list[str] = []
        review = list(chosen.review)
        # The SEG holds only what was imaged: the mask clipped to the US fan and regions; a
        # mask that leaves them is not the measured head (issue 28).
        source = series.datasets[best] if len(series.datasets) == len(results) else None
        region = imaged_region(raw.images[best], source or series.datasets[0])
        outside = outside_share(chosen.mask, region)
        mask = chosen.mask & region
        if outside > MAX_OUTSIDE_FAN:
            review.append(
                f"head mask leaves the imaged region ({outside:.0%} of it outside the "
                f"ultrasound fan, > {MAX_OUTSIDE_FAN:.0%})"
            )
        measurements, more, shape = head_measurements(
            biometry(chosen.ellipse),
            calibrated=calibration is not None,
            flagged=bool(review),
            source=series.datasets[0],
            entered=series.entered_ga,
        )
        warnings += more
        measurements.append(
            MeasurementValue("measured_frame", "Measured frame number", best + 1, "{frame}")
        )
        return ModelOutput(
            segments=[Segment(FETAL_HEAD, mask[np.newaxis])],
            measurements=measurements,
            warnings=warnings,
            source_frame=best,
            review=review,
            extras={
                "quality": chosen.signals.as_dict() if chosen.signals else None,
                "mask_outside_fan": round(outside, 4),
                "cephalic_index": shape,
                "gestational_age_method": _ga_method(measurements),
                "gestational_age_by_dates": by_dates_report(
                    by_dates(series.datasets[0], series.entered_ga)
                ),
            },
        )


def head_measurements(
    b: Biometry,
    *,
    calibrated: bool,
    flagged: bool,
    source: Dataset,
    entered: Dating | None = None,
) -> tuple[list[MeasurementValue], list[str], dict[str, object] | None]:
    """HC, BPD, OFD, cephalic index, growth standing and GA of one head's biometry, as the
    result reports them: the measurements, warnings, and the head's shape for report.json.
    Sizes are in pixels without calibration (no GA); a flagged result gets no GA. The model
    and a reviewer's corrected ellipse (worker.corrections) both measure with it. ``entered``:
    the study's entered GA by dates, which wins over ``source``'s Last Menstrual Date."""
    from worker.models.fetal_head.biometry import (  # OpenCV: not where the gateway routes
        BPD_CONVENTION,
        CEPHALIC_INDEX_NORMAL,
        CEPHALIC_INDEX_SOURCE,
        cephalic_index_normal,
    )

    warnings: list[str] = []
    unit, suffix = ("mm", "mm") if calibrated else ("{pixels}", "px")
    if not calibrated:
        warnings.append(
            "no calibration (SequenceOfUltrasoundRegions in cm or PixelSpacing): sizes in "
            "pixels, no gestational age"
        )
    measurements = [
        MeasurementValue(
            f"head_circumference_{suffix}",
            "Head circumference",
            b.head_circumference_mm,
            unit,
            HEAD_CIRCUMFERENCE,
            segment=1,
        ),
        MeasurementValue(
            f"biparietal_diameter_{suffix}",
            f"Biparietal diameter ({BPD_CONVENTION})",
            b.biparietal_diameter_mm,
            unit,
            BIPARIETAL_DIAMETER,
            segment=1,
        ),
        MeasurementValue(
            f"occipitofrontal_diameter_{suffix}",
            "Occipitofrontal diameter",
            b.occipitofrontal_diameter_mm,
            unit,
            OCCIPITOFRONTAL_DIAMETER,
            segment=1,
        ),
    ]
    shape: dict[str, object] | None = None
    if calibrated:  # a ratio of lengths: needs the pixels' true aspect, as the sizes do
        lo, hi = CEPHALIC_INDEX_NORMAL
        measurements.append(
            MeasurementValue(
                "cephalic_index",
                f"Cephalic index (BPD/OFD x 100; normal {lo:.0f}-{hi:.0f})",
                b.cephalic_index,
                "{index}",
                segment=1,
            )
        )
        shape = {
            "value": round(b.cephalic_index, 1),
            "normal_range": [lo, hi],
            "within_normal_range": cephalic_index_normal(b.cephalic_index),
            "source": CEPHALIC_INDEX_SOURCE,
        }
    if calibrated and not flagged:
        measurements += growth_measurements(source, b.head_circumference_mm, entered)
    if flagged:
        warnings.append("gestational age withheld: the quality gate flagged this result")
    elif calibrated and b.gestational_age_days is not None:
        measurements += _ga_by_hc(b.head_circumference_mm, b.gestational_age_days)
    elif calibrated:
        warnings.append("HC outside Hadlock's range: no gestational age")
    return measurements, warnings, shape


def _ga_by_hc(hc_mm: float, days: float) -> list[MeasurementValue]:
    """The GA by the Hadlock 1984 HC formula and, where the formula's table has it, its
    +/-2 SD (weeks; in days on the GA for the SR)."""
    from worker.models.fetal_head.biometry import hadlock_ga_2sd_weeks

    sd2 = hadlock_ga_2sd_weeks(hc_mm)
    found = [
        MeasurementValue(
            "gestational_age_days",
            "Gestational age (Hadlock 1984 HC)",
            days,
            "d",
            GA_BY_HC_HADLOCK,
            segment=1,
            uncertainty=None if sd2 is None else sd2 * 7.0,
        )
    ]
    if sd2 is not None:
        found.append(
            MeasurementValue(
                "gestational_age_2sd_weeks",
                "Gestational age ± (2 SD, Hadlock 1984 HC)",
                sd2,
                "wk",
            )
        )
    return found


def _ga_method(measurements: list[MeasurementValue]) -> dict[str, object] | None:
    """report.json's account of the GA by HC: the formula, its +/-2 SD and where both are
    from; None when no GA was given."""
    from worker.models.fetal_head.biometry import HADLOCK_HC_FORMULA, HADLOCK_HC_SOURCE

    values = {m.key: m.value for m in measurements}
    if "gestational_age_days" not in values:
        return None
    return {
        "formula": HADLOCK_HC_FORMULA,
        "two_sd_weeks": values.get("gestational_age_2sd_weeks"),
        "source": HADLOCK_HC_SOURCE,
    }


def growth_measurements(
    ds: Dataset, hc_mm: float, entered: Dating | None = None
) -> list[MeasurementValue]:
    """The GA by dates (``entered``, the study's GA a reviewer entered, else the Last Menstrual
    Date to the study date when the file has both; worker.ops.dating's rule) and the HC's
    z-score and centile for it in the INTERGROWTH-21st standard (14-40 weeks); in the SR, the
    GA as LOINC "Gestational Age by LMP" and the z-score and centile as the HC's statistical
    properties."""
    from worker.models.fetal_head.growth import STANDARD, by_dates, by_dates_measurement, standing

    dating = by_dates(ds, entered)
    if dating is None:
        return []
    days = dating.days
    found = [by_dates_measurement(dating)]
    where = standing("hc", hc_mm, days / 7.0)
    if where is not None:
        population = Population(
            "INTERGROWTH-21st fetal growth standard: head circumference (outer border) at the "
            f"gestational age by dates{' (entered)' if dating.source == 'entered' else ''}, "
            f"{days / 7.0:.1f} weeks",
            STANDARD,
        )
        found += [
            MeasurementValue(
                "head_circumference_z",
                "HC z-score (INTERGROWTH-21st)",
                where.z,
                "{z-score}",
                Z_SCORE,
                segment=1,
                statistic_of="head_circumference_mm",
                population=population,
            ),
            MeasurementValue(
                "head_circumference_centile",
                "HC centile (INTERGROWTH-21st)",
                where.centile,
                "{centile}",
                PERCENTILE,
                segment=1,
                statistic_of="head_circumference_mm",
                population=population,
            ),
        ]
    return found


def _sharpness(image: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_]) -> float:
    """Variance of the Laplacian in the head's bounding box (the whole frame without a head)."""
    import cv2  # the gateway routes with this module and has no OpenCV

    rows, cols = np.nonzero(mask)
    box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] if rows.size else image
    return float(cv2.Laplacian(box, cv2.CV_32F).var())


def _load(device: str) -> FetalHeadModel:
    return FetalHeadModel(device)


SPEC = ModelSpec(
    name="fetal-head-unet",
    version="2.0.0",
    queue="gpu",
    description="Obstetric US: fetal head U-Net, ellipse fit, HC/BPD/OFD/GA (Hadlock)",
    accepts=accepts,
    load=_load,
    load_weights=FetalHeadModel,
    algorithm_family="ArtificialIntelligence",
    time_limit_seconds=300,
    batch_series=True,
    train={"fetal-head": "worker.models.fetal_head.train:command"},
    evaluate={"fetal-head": "worker.models.fetal_head.evaluate:command"},
    phantoms={"fetal-head": "worker.models.fetal_head.phantoms:command"},
    pack={"fetal-head": "worker.models.fetal_head.train:pack_command"},
    card=CARD,
)
