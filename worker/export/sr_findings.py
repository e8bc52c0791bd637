"""Detected regions (``ModelOutput.findings``) as TID 1410 planar ROI groups of the TID 1500
report: a closed SCOORD POLYLINE box on the source image, the finding type, and the detector's
confidence as a Probability (DCM 122157, UCUM ``1``). A finding made by a component with a
validation status of its own names it in its group's algorithm identification."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from worker.core.card import not_for_clinical_use
from worker.export.outputs import Finding
from worker.pipeline.loading import LoadedSeries

NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")


def algorithm_identification(
    name: str, version: str, validation: str | None
) -> hd.sr.AlgorithmIdentification:
    """TID 4019 with the validation status as an Algorithm Parameter (TEXT), and "NOT FOR
    CLINICAL USE" as a second one for phantom-only and unvalidated results."""
    parameters = [f"validation status: {validation or 'unknown'}"]
    if not_for_clinical_use(validation):
        parameters.append("NOT FOR CLINICAL USE")
    return hd.sr.AlgorithmIdentification(name=name, version=version, parameters=parameters)


def _region(finding: Finding, series: LoadedSeries) -> hd.sr.ImageRegion:
    source = series.datasets[min(finding.frame, len(series.datasets) - 1)]
    frames = [finding.frame + 1] if int(source.get("NumberOfFrames", 1)) > 1 else None
    x0, y0, x1, y1 = finding.box_px
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=corners,
        source_image=hd.sr.SourceImageForRegion(
            source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=frames
        ),
    )


def finding_groups(
    findings: list[Finding],
    series: LoadedSeries,
    algorithm: tuple[str, str, str | None],
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """One group per finding; ``algorithm`` is (name, version, the result's validation
    status), a finding's own status taking the place of the last."""
    name, version, validation = algorithm
    groups = []
    for number, finding in enumerate(findings, start=1):
        concept = finding.concept
        algorithm_id = algorithm_identification(name, version, finding.validation or validation)
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"{finding.label} {number}"
                ),
                referenced_region=_region(finding, series),
                finding_type=hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning),
                algorithm_id=algorithm_id,
                measurements=[
                    hd.sr.Measurement(
                        name=codes.DCM.Probability,
                        value=round(finding.score, 4),
                        unit=NO_UNITS,
                        algorithm_id=algorithm_id,
                    )
                ],
            )
        )
    return groups
