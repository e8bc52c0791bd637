"""Chest radiograph (CR/DX): lung fields (U-Net) and pneumonia opacities (Faster R-CNN).

One job runs the lung-field U-Net, loaded once per worker process and batched over the frames
of the series: SEG with the right and left lung fields, lung areas (cm² from PixelSpacing,
else ImagerPixelSpacing; pixels with a warning when neither is usable).

The opacity detector is validated on phantoms only: it is off unless
``MEDSEG_PNEUMONIA_DETECTOR`` turns it on for research. When on, the opacities at or above
``MEDSEG_PNEUMONIA_SCORE_THRESHOLD`` are findings (report.json, ``--json``, SR regions) and the
output names the detector among its components, so the result as a whole is not for clinical
use (withheld from destinations without ``send_not_validated``, marked in SEG, SR, overlay).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from worker.core.card import ValidationStatus
from worker.core.errors import InputError
from worker.core.registry import ModelSpec
from worker.core.tags import SeriesTags
from worker.export.outputs import (
    LEFT_LUNG,
    PNEUMONIA,
    RIGHT_LUNG,
    CodedConcept,
    Finding,
    MeasurementValue,
    ModelOutput,
    Segment,
)
from worker.models.lung_cxr import gate
from worker.models.lung_cxr.card import CARD
from worker.models.lung_cxr.fields import Fields, pixels
from worker.pipeline.calibration import Calibration
from worker.pipeline.loading import LoadedSeries

if TYPE_CHECKING:
    from worker.models.lung_cxr.detector import Detection

logger = logging.getLogger(__name__)

AREA = CodedConcept("42798000", "SCT", "Area")
_CHEST_WORDS = {"CHEST", "THORAX", "LUNG", "LUNGS", "CXR", "TORSO"}
FINDING_LABEL = "Pneumonia opacity"
#: The lung-field convention of the training masks (cxr-lungs, V7 Labs annotations): the
#: projected field, lung behind the heart and below the diaphragm dome's top included.
_FIELD = "projected lung field incl. lung behind the heart"
RIGHT_FIELD = dataclasses.replace(RIGHT_LUNG, description=f"Right {_FIELD}")
LEFT_FIELD = dataclasses.replace(LEFT_LUNG, description=f"Left {_FIELD}")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "lung_cxr_unet.pt"  # the lung-field U-Net
DETECTOR = "pneumonia-detector"  # the component's name on the card


def accepts(tags: SeriesTags) -> bool:
    if tags.modality not in ("CR", "DX"):
        return False
    words = set(re.split(r"[^A-Z0-9]+", f"{tags.body_part_examined} {tags.series_description}"))
    return bool(words & _CHEST_WORDS)


def _patient_left_on_image_right(series: LoadedSeries) -> bool:
    """PatientOrientation's first value is the direction of increasing column index."""
    orientation = series.datasets[0].get("PatientOrientation")
    first = str(orientation[0]) if orientation and len(orientation) == 2 else "L"
    return "R" not in first.upper()


@dataclass
class _Prepared:
    images: list[npt.NDArray[np.uint8]]  # display frames, full size
    inputs: list[npt.NDArray[np.float32]]  # the U-Net's inputs, one per frame


@dataclass
class _Forwarded:
    images: list[npt.NDArray[np.uint8]]
    small: list[npt.NDArray[np.float32]]  # lung probabilities at the U-Net's size
    detections: list[list[Detection]] | None  # per frame; None: the detector is off


class LungCxrModel:
    """The lung-field U-Net, and the opacity detector when it is on (``detector``; default
    ``MEDSEG_PNEUMONIA_DETECTOR``); checkpoints and threshold from the settings unless given."""

    def __init__(
        self,
        device: str,
        *,
        unet_weights: Path | None = None,
        detector_weights: Path | None = None,
        threshold: float | None = None,
        detector: bool | None = None,
    ) -> None:
        from worker.core.settings import get_settings
        from worker.models._nn.predictor import UNetPredictor
        from worker.models.lung_cxr.detector import DEFAULT_DETECTOR_WEIGHTS, OpacityDetector

        settings = get_settings()
        self.unet = UNetPredictor(
            unet_weights or settings.lung_cxr_weights or DEFAULT_WEIGHTS, device
        )
        self.detector: OpacityDetector | None = None
        if settings.pneumonia_detector if detector is None else detector:
            self.detector = OpacityDetector(
                detector_weights or settings.pneumonia_weights or DEFAULT_DETECTOR_WEIGHTS, device
            )
        self.threshold = settings.pneumonia_score_threshold if threshold is None else threshold
        self.thresholds = gate.Thresholds.from_metadata(self.unet.metadata.get("quality_gate"))
        # The result row holds one checksum: the U-Net's; both are in report.json.
        self.weights_sha256 = self.unet.sha256
        logger.info(
            "lung CXR U-Net sha256 %s… on %s; pneumonia detector %s",
            self.unet.sha256[:12],
            device,
            f"ON (research, sha256 {self.detector.sha256[:12]}…)" if self.detector else "off",
        )

    def predict(self, series: LoadedSeries) -> ModelOutput:
        return self.finish(series, self.forward(self.prepare(series)))

    # The three stages of ``predict`` (worker.core.registry.StagedModel), and several series'
    # forward passes in one (BatchedModel). The detector runs with the U-Net, in the thread
    # and under the autocast of the forward pass.
    def prepare(self, series: LoadedSeries) -> _Prepared:
        from worker.models.lung_cxr.preprocess import display_uint8

        mono1 = str(series.datasets[0].get("PhotometricInterpretation", "")) == "MONOCHROME1"
        images = [display_uint8(frame, monochrome1=mono1) for frame in series.frames]
        return _Prepared(images, self.unet.prepare(images))

    def forward(self, prepared: _Prepared) -> _Forwarded:
        return self.forward_batch([prepared])[0]

    def forward_batch(self, prepared: Sequence[_Prepared]) -> list[_Forwarded]:
        small = self.unet.forward_grouped([p.inputs for p in prepared])
        return [
            _Forwarded(p.images, s, self.detector.detect(p.images) if self.detector else None)
            for p, s in zip(prepared, small, strict=True)
        ]

    def finish(self, series: LoadedSeries, raw: _Forwarded) -> ModelOutput:
        from worker.models._nn.predictor import full_size
        from worker.models.lung_cxr.fields import lung_fields
        from worker.models.lung_cxr.scale import radiograph_scale

        images = raw.images
        left_on_right = _patient_left_on_image_right(series)
        found = [
            lung_fields(full_size(p, img.shape), patient_left_on_image_right=left_on_right)
            for img, p in zip(images, raw.small, strict=True)
        ]
        first = found[0]
        if not (first.right.any() and first.left.any()):
            raise InputError("no lung fields found on the radiograph")
        scale = radiograph_scale(series.datasets[0])
        warnings = [] if scale.calibration else [scale.note]
        if len(images) > 1:
            warnings.append(f"{len(images)} images in the series: measurements are of the first")
        measurements = _areas(first.right, first.left, scale.calibration)
        quality = gate.field_signals(first)
        field_cm2 = _field_cm2(first.right, first.left, scale.calibration)
        review = gate.reasons(quality, self.thresholds, field_cm2=field_cm2)
        findings: list[Finding] = []
        components: dict[str, ValidationStatus] = {}
        weights = {"lung_unet": self.unet.sha256}
        extras: dict[str, object] = {
            "quality": quality.as_dict(),
            "scale": scale.note,
            "weights": weights,
            "pneumonia_detector": "on (research)" if self.detector else "off",
        }
        if self.detector is not None:
            status = CARD.component_status(DETECTOR, self.detector.sha256)
            components[DETECTOR] = status
            findings = [
                Finding(
                    FINDING_LABEL,
                    d.score,
                    _clip(d.box, images[k].shape),
                    PNEUMONIA,
                    frame=k,
                    validation=status,
                )
                for k, detections in enumerate(raw.detections or [])
                for d in detections
                if d.score >= self.threshold
            ]
            boxes = [f.box_px for f in findings if f.frame == 0]
            fields_mask = first.full(first.right | first.left)
            review += gate.box_reason(gate.boxes_outside(boxes, fields_mask), len(boxes))
            # One count for what is reported: every finding listed, on every image.
            images_note = f", {len(images)} images" if len(images) > 1 else ""
            measurements.append(
                MeasurementValue(
                    "pneumonia_findings",
                    f"Opacities at confidence >= {self.threshold:g}{images_note} "
                    f"({status}, not for clinical use)",
                    float(len(findings)),
                    "{findings}",
                )
            )
            extras["score_threshold"] = self.threshold
            weights["detector"] = self.detector.sha256
        return ModelOutput(
            segments=[
                Segment(RIGHT_FIELD, _stacked(found, right=True)),
                Segment(LEFT_FIELD, _stacked(found, right=False)),
            ],
            measurements=measurements,
            warnings=warnings,
            findings=findings,
            review=review,
            components=components,
            extras=extras,
        )


def _stacked(found: list[Fields], *, right: bool) -> npt.NDArray[np.bool_]:
    """The right (or left) fields of every frame as one film-sized volume."""
    out = np.zeros((len(found), *found[0].shape), dtype=bool)
    for plane, fields in zip(out, found, strict=True):
        plane[fields.box] = fields.right if right else fields.left
    return out


def _clip(
    box: tuple[float, float, float, float], shape: tuple[int, ...]
) -> tuple[float, float, float, float]:
    rows, cols = shape[0], shape[1]
    x0, y0, x1, y1 = box
    return (
        min(max(x0, 0.0), cols),
        min(max(y0, 0.0), rows),
        min(max(x1, 0.0), cols),
        min(max(y1, 0.0), rows),
    )


def _field_cm2(
    right: npt.NDArray[np.bool_], left: npt.NDArray[np.bool_], calibration: Calibration | None
) -> tuple[float, float] | None:
    if calibration is None:
        return None
    per_pixel = calibration.row_mm * calibration.column_mm / 100.0
    return float(pixels(right)) * per_pixel, float(pixels(left)) * per_pixel


def _areas(
    right: npt.NDArray[np.bool_], left: npt.NDArray[np.bool_], calibration: Calibration | None
) -> list[MeasurementValue]:
    if calibration is not None:
        per_pixel = calibration.row_mm * calibration.column_mm / 100.0  # cm²
        suffix, unit = "cm2", "cm2"
    else:
        per_pixel, suffix, unit = 1.0, "px", "{pixels2}"  # square pixels: shown as px²
    r, lft = float(pixels(right)) * per_pixel, float(pixels(left)) * per_pixel
    return [
        MeasurementValue(f"lung_area_{suffix}", "Lung field area (both)", r + lft, unit, AREA),
        MeasurementValue(f"right_lung_area_{suffix}", "Right lung field area", r, unit, AREA, 1),
        MeasurementValue(f"left_lung_area_{suffix}", "Left lung field area", lft, unit, AREA, 2),
    ]


def _load(device: str) -> LungCxrModel:
    return LungCxrModel(device)


SPEC = ModelSpec(
    name="lung-cxr",
    version="2.1.0",
    queue="gpu",
    description="Chest X-ray: lung fields (U-Net), areas, pneumonia opacities (Faster R-CNN)",
    accepts=accepts,
    load=_load,
    load_weights=lambda device, weights: LungCxrModel(device, unet_weights=weights),
    algorithm_family="ArtificialIntelligence",
    batch_series=True,
    train={
        "lung-cxr": "worker.models.lung_cxr.recipe:command",
        "pneumonia": "worker.models.lung_cxr.detector_train:command",
    },
    evaluate={
        "lung-cxr": "worker.models.lung_cxr.evaluate:lungs_command",
        "pneumonia": "worker.models.lung_cxr.evaluate:detector_command",
    },
    phantoms={"chest-xray": "worker.models.lung_cxr.phantoms:command"},
    pack={"lung-cxr": "worker.models.lung_cxr.recipe:pack_command"},
    card=CARD,
)
