"""What a model returns: coded segments with masks, and measurements with units."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from worker.core.card import ValidationStatus


@dataclass(frozen=True)
class CodedConcept:
    value: str
    scheme: str
    meaning: str


ANATOMICAL_STRUCTURE = CodedConcept("91723000", "SCT", "Anatomical Structure")


@dataclass(frozen=True)
class SegmentKind:
    """A segment's identity: label, SNOMED property category/type and display colour (RGB)."""

    label: str
    property_type: CodedConcept
    color: tuple[int, int, int]
    property_category: CodedConcept = ANATOMICAL_STRUCTURE
    description: str = ""  # the SEG's Segment Description: what the mask includes


LEFT_LUNG = SegmentKind("Left lung", CodedConcept("44029006", "SCT", "Left lung"), (128, 174, 128))
RIGHT_LUNG = SegmentKind(
    "Right lung", CodedConcept("3341006", "SCT", "Right lung"), (111, 184, 210)
)


FETAL_HEAD = SegmentKind("Fetal head", CodedConcept("69536005", "SCT", "Head"), (230, 180, 60))
FETAL_BRAIN = SegmentKind(
    "Fetal brain",
    CodedConcept("12738006", "SCT", "Brain"),
    (250, 250, 225),
    # The convention of the atlas the model learnt from and of the usual manual brain masks:
    # everything inside the skull, so the volume is the intracranial volume (docs/fetal-brain.md).
    description="Intracranial: brain, ventricles, extra-axial CSF; no skull",
)


@dataclass
class Segment:
    kind: SegmentKind
    mask: npt.NDArray[np.bool_]  # same shape as the input frames: (frames, rows, columns)


VOLUME = CodedConcept("118565006", "SCT", "Volume")
AREA = CodedConcept("42798000", "SCT", "Area")
HEAD_CIRCUMFERENCE = CodedConcept("11984-2", "LN", "Head Circumference")
BIPARIETAL_DIAMETER = CodedConcept("11820-8", "LN", "Biparietal Diameter")
OCCIPITOFRONTAL_DIAMETER = CodedConcept("11851-3", "LN", "Occipital-Frontal Diameter")
GA_BY_HC_HADLOCK = CodedConcept("11932-1", "LN", "HC, Hadlock 1984")
#: The GA by dates (LOINC; in PS3.16 CIDs 12012, 12013 and 12019, pydicom.sr.codedict).
GA_BY_LMP = CodedConcept("11885-1", "LN", "Gestational Age by LMP")
#: Where a measurement stands in a reference population, as the values of its Measurement
#: Statistical Properties (TID 311; PS3.16 CID 227 "Sample Statistical Descriptors").
Z_SCORE = CodedConcept("121416", "DCM", "Z-Score of measurement")
PERCENTILE = CodedConcept("121415", "DCM", "Percentile Ranking of measurement")


@dataclass(frozen=True)
class Population:
    """The reference population a statistic (z-score, centile) is taken in: the SR's
    Population Description and Reference Authority (TID 311, text)."""

    description: str
    authority: str


@dataclass(frozen=True)
class MeasurementValue:
    """One measurement. ``key`` is ``name_unit`` as in ``--json`` (e.g. ``lung_volume_ml``).

    ``concept`` names it in the SR (TID 1500); without one it stays out of the SR.
    ``segment`` is the 1-based segment it was measured on, None for the whole image set.
    ``derivation`` (TID 1419 Derivation, e.g. SCT Maximum) says how one value was drawn from
    many: the largest slice's area of a volume. A measurement in ``{pixels}`` stays out of
    the SR (a LOINC or SNOMED length or area concept means a physical size).
    ``uncertainty`` is the published +/- of the method in ``unit`` (e.g. the Hadlock HC
    formula's 2 SD): the SR's upper and lower measurement uncertainty (TID 310).
    ``statistic_of`` (with ``population``) makes it a statistic of the measurement of that
    key (a z-score or centile, concept ``Z_SCORE`` or ``PERCENTILE``): in the SR it is a value
    of that measurement's statistical properties (TID 311), not a measurement of its own.
    """

    key: str
    label: str
    value: float
    unit: str  # UCUM
    concept: CodedConcept | None = None
    segment: int | None = None
    derivation: CodedConcept | None = None
    uncertainty: float | None = None
    statistic_of: str | None = None
    population: Population | None = None


PNEUMONIA = CodedConcept("233604007", "SCT", "Pneumonia")
MAXIMUM = CodedConcept("56851009", "SCT", "Maximum")


@dataclass(frozen=True)
class Finding:
    """A detected region: ``box_px`` = (x0, y0, x1, y1) in source image pixels (column, row;
    x1/y1 are the far edges), ``score`` the detector's confidence 0-1. ``validation``: the
    status of the component that found it when it has one of its own (a model card's
    ``ComponentCard``), None when the finding shares its result's status."""

    label: str
    score: float
    box_px: tuple[float, float, float, float]
    concept: CodedConcept
    frame: int = 0  # 0-based frame of the source image
    validation: ValidationStatus | None = None

    def as_json(self) -> dict[str, object]:
        shown: dict[str, object] = {
            "label": self.label,
            "score": round(self.score, 4),
            "box_px": [round(v, 1) for v in self.box_px],
        }
        if self.validation is not None:
            shown["validation"] = self.validation
        return shown


@dataclass
class ModelOutput:
    segments: list[Segment]
    measurements: list[MeasurementValue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: For a 2D result on one frame of a cine: the 0-based frame the (single-frame) masks
    #: belong to. None: masks cover every frame of the series.
    source_frame: int | None = None
    #: Model-specific details kept in the result's report.json (per-slice areas, ...).
    extras: dict[str, object] = field(default_factory=dict)
    #: Detected regions (boxes with confidence); in report.json, ``--json`` and the SR.
    findings: list[Finding] = field(default_factory=list)
    #: Why the model's quality gate refuses to vouch for this output (empty: accepted). A
    #: result with reasons is ``needs_review``: still written and delivered, flagged everywhere.
    review: list[str] = field(default_factory=list)
    #: Components with a validation status of their own that ran for this output (the
    #: pneumonia detector inside lung-cxr): name -> status. The output as a whole is as
    #: trusted as the least trusted of its model and these.
    components: dict[str, ValidationStatus] = field(default_factory=dict)
    #: The status of the output as a whole: the least trusted of the model card's status for
    #: the weights that made it and ``components``; set by the pipeline
    #: (``worker.pipeline.run.export``), not by the model. None: not known yet.
    validation: ValidationStatus | None = None
