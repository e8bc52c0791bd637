"""The measurement report: a Comprehensive 3D SR following TID 1500 (highdicom.sr).

Each measurement with a coded concept goes into a measurement group: per segment (TID 1411
volumetric for a volume, TID 1410 planar for one 2D frame) referencing the SEG segment and the
source images, or an image-level group (TID 1501) for measurements of several segments.
A z-score or centile of a measurement is a value of that measurement's statistical
properties (TID 311) with its reference population and authority; the gestational age by
dates (LMP) has a group of its own, without finding sites or algorithm (it is not measured
on the images).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes

from worker import __version__
from worker.core.registry import ModelSpec
from worker.export._seg_stills import segment_of
from worker.export.labels import series_description
from worker.export.numbering import SR_FALLBACK, SR_OFFSET, derived_series_number
from worker.export.outputs import GA_BY_LMP, CodedConcept, MeasurementValue, ModelOutput
from worker.export.seg import save_atomic
from worker.export.sr_findings import algorithm_identification, finding_groups
from worker.pipeline.loading import LoadedSeries

logger = logging.getLogger(__name__)

IMAGING_PROCEDURE = hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure")
UCUM: dict[str, tuple[str, str]] = {
    "mm": ("mm", "millimeter"),
    "mL": ("ml", "milliliter"),
    "d": ("d", "day"),
    "cm2": ("cm2", "square centimeter"),
    "mm2": ("mm2", "square millimeter"),
    "{z-score}": ("1", "no units"),  # PS3.16 CID 7181
    "{centile}": ("%", "Percent"),
}
#: Concepts of a single plane: in a volumetric group they need a derivation (Maximum, ...).
PLANAR_CONCEPTS = frozenset({"42798000"})  # SCT Area
#: Concepts not measured on the images (no finding site, no algorithm): their own group.
DATING_CONCEPTS = frozenset({GA_BY_LMP.value})


def _code(concept: CodedConcept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def _unit(m: MeasurementValue) -> hd.sr.CodedConcept:
    value, meaning = UCUM[m.unit]
    return hd.sr.CodedConcept(value, "UCUM", meaning)


def _measurement(
    m: MeasurementValue,
    algorithm: hd.sr.AlgorithmIdentification | None,
    sites: list[hd.sr.FindingSite] | None = None,
    statistics: Sequence[MeasurementValue] = (),
) -> hd.sr.Measurement:
    assert m.concept is not None
    return hd.sr.Measurement(
        name=_code(m.concept),
        value=m.value,
        unit=_unit(m),
        algorithm_id=algorithm,
        derivation=_code(m.derivation) if m.derivation else None,
        finding_sites=sites,
        properties=_properties(m, statistics),
    )


def _properties(
    m: MeasurementValue, statistics: Sequence[MeasurementValue]
) -> hd.sr.MeasurementProperties | None:
    """TID 310: the method's uncertainty, and where the value stands in its reference
    population (TID 311: z-score, centile; the population and authority as text)."""
    population = next((s.population for s in statistics if s.population), None)
    stated = (
        hd.sr.MeasurementStatisticalProperties(
            values=[
                hd.sr.NumContentItem(
                    name=_code(s.concept),
                    value=s.value,
                    unit=_unit(s),
                    relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
                )
                for s in statistics
                if s.concept is not None
            ],
            description=population.description[:1024] if population else None,
            authority=population.authority[:1024] if population else None,
        )
        if statistics
        else None
    )
    if m.uncertainty is None and stated is None:
        return None
    return hd.sr.MeasurementProperties(
        measurement_statistical_properties=stated,
        upper_measurement_uncertainty=m.uncertainty,
        lower_measurement_uncertainty=m.uncertainty,
    )


def _dating(m: MeasurementValue) -> bool:
    return m.segment is None and m.concept is not None and m.concept.value in DATING_CONCEPTS


def statistics_of(measurements: Sequence[MeasurementValue]) -> dict[str, list[MeasurementValue]]:
    """{measurement key: the z-scores and centiles of it that the SR can state}."""
    found: dict[str, list[MeasurementValue]] = defaultdict(list)
    for m in measurements:
        if m.statistic_of is not None and m.concept is not None and m.unit in UCUM:
            found[m.statistic_of].append(m)
    return found


def codable(m: MeasurementValue, volumetric: bool) -> bool:
    """Whether ``m`` can say exactly what it is in the SR as a measurement: a concept, a
    physical unit (not ``{pixels}``), and for a single-plane concept in a volume, a
    derivation (Maximum). A statistic of another measurement goes with that one."""
    if m.concept is None or m.unit not in UCUM or m.statistic_of is not None:
        return False
    return not (volumetric and m.concept.value in PLANAR_CONCEPTS and m.derivation is None)


def _sites(output: ModelOutput) -> list[hd.sr.FindingSite]:
    """A measurement of the whole image set covers every segment: each one a Finding Site."""
    return [hd.sr.FindingSite(_code(s.kind.property_type)) for s in output.segments]


def _review(output: ModelOutput) -> list[hd.sr.QualitativeEvaluation] | None:
    """A flagged output's groups say so: Quality Assessment = For Physician Review."""
    if not output.review:
        return None
    return [hd.sr.QualitativeEvaluation(codes.DCM.QualityAssessment, codes.DCM.ForPhysicianReview)]


def _segment_group(
    number: int,
    measurements: list[hd.sr.Measurement],
    *,
    series: LoadedSeries,
    output: ModelOutput,
    seg: hd.seg.Segmentation,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
):
    kind = output.segments[number - 1].kind
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{kind.label} (segment {number})")
    if "FrameOfReferenceUID" in seg:
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(series.series_uid),
            ),
            finding_type=_code(kind.property_type),
            algorithm_id=algorithm,
            measurements=measurements or None,
            qualitative_evaluations=_review(output),
        )
    source, frames = _measured_image(series, output)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        referenced_segment=hd.sr.ReferencedSegmentationFrame(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            frame_number=_seg_frame(seg, number, str(source.SOPInstanceUID)),
            segment_number=number,
            source_image=hd.sr.SourceImageForSegmentation(
                source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=frames
            ),
        ),
        finding_type=_code(kind.property_type),
        algorithm_id=algorithm,
        measurements=measurements or None,
        qualitative_evaluations=_review(output),
    )


def _measured_image(series: LoadedSeries, output: ModelOutput) -> tuple[Dataset, list[int] | None]:
    """The source image (and its frame, in a cine) the planar measurements were made on:
    the output's ``source_frame`` (a cine's frame or one still of several), else the first."""
    if output.source_frame is None:
        return series.datasets[0], None
    if len(series.datasets) > 1:
        return series.datasets[output.source_frame], None
    source = series.datasets[0]
    multiframe = int(source.get("NumberOfFrames", 1) or 1) > 1
    return source, [output.source_frame + 1] if multiframe else None


def _seg_frame(seg: Dataset, segment: int, source_uid: str) -> int:
    """The 1-based SEG frame holding ``segment`` on the source image ``source_uid``."""
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        if segment_of(seg, item) != segment:
            continue
        derived = item.get("DerivationImageSequence", [])
        uids = {str(s.ReferencedSOPInstanceUID) for d in derived for s in d.SourceImageSequence}
        if not uids or source_uid in uids:
            return number
    raise ValueError(f"the SEG has no frame of segment {segment} on image {source_uid}")


def build_sr(
    series: LoadedSeries, output: ModelOutput, spec: ModelSpec, seg: hd.seg.Segmentation
) -> Dataset | None:
    """The TID 1500 report (a Comprehensive 3D SR dataset; read it back with
    ``hd.sr.srread`` for the content tree), or None when the output has no coded measurement
    nor finding. The content tree is built and checked by highdicom's templates."""
    volumetric = "FrameOfReferenceUID" in seg
    coded = [m for m in output.measurements if codable(m, volumetric)]
    # A segment whose measurements cannot be coded (sizes in pixels) keeps its group, without
    # them: the SR still says what was found where, and nothing it cannot name.
    uncoded = {
        m.segment
        for m in output.measurements
        if m.concept is not None and m.segment is not None and not codable(m, volumetric)
    }
    if not coded and not uncoded and not output.findings:
        return None
    algorithm = algorithm_identification(spec.name, spec.version, output.validation)
    statistics = statistics_of(output.measurements)
    by_segment: dict[int | None, list[hd.sr.Measurement]] = defaultdict(list)
    for number in sorted(uncoded):
        by_segment[number] = []
    dating = [_measurement(m, None) for m in coded if _dating(m)]
    for m in coded:
        if _dating(m):
            continue
        sites = _sites(output) if m.segment is None else None
        by_segment[m.segment].append(_measurement(m, algorithm, sites, statistics.get(m.key, [])))
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = [
        _segment_group(number, items, series=series, output=output, seg=seg, algorithm=algorithm)
        for number, items in sorted(by_segment.items(), key=lambda kv: kv[0] or 0)
        if number is not None
    ]
    if None in by_segment:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Totals"),
                algorithm_id=algorithm,
                measurements=by_segment[None],
                qualitative_evaluations=_review(output),
            )
        )
    if dating:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier="Gestational age by dates"
                ),
                measurements=dating,
            )
        )
    groups.extend(
        finding_groups(output.findings, series, (spec.name, spec.version, output.validation))
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="medseg", manufacturer_name="medseg", model_name=spec.name
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    root = report[0]
    _drop_segment_number_beside_frame(root.ContentSequence)
    evidence: list[Dataset] = [*series.datasets, seg]
    _require_evidence(root, evidence)
    document = _document(evidence, spec, output)
    for tag, element in root.items():
        document[tag] = element
    return document


def _document(evidence: Sequence[Dataset], spec: ModelSpec, output: ModelOutput) -> Dataset:
    """The SR document around an empty root container, by highdicom: patient, study, series,
    equipment and the evidence sequence, which depend on ``evidence`` only.

    The caller puts the real root's content in. highdicom's constructor deep-copies and
    re-parses the whole content tree it is given (about 70 % of the SR's cost); with an
    empty root that work is nil and the written document is the same.
    """
    placeholder = hd.sr.ContainerContentItem(name=codes.DCM.ImagingMeasurementReport)
    placeholder.ContentSequence = DicomSequence()
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=placeholder,
        series_instance_uid=hd.UID(),
        series_number=derived_series_number(evidence[0], SR_OFFSET, SR_FALLBACK),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        is_complete=True,
        series_description=series_description(f"medseg {spec.name} measurements", output),
        software_versions=f"medseg {__version__}",
    )
    document = Dataset(sr)  # the same elements, without the stale parsed content tree
    document.file_meta = sr.file_meta
    return document


def _require_evidence(root: Dataset, evidence: Sequence[Dataset]) -> None:
    """Every instance the content references is in ``evidence`` (highdicom checks this when
    it parses the tree; here one plain walk does)."""
    known = {str(ds.SOPInstanceUID) for ds in evidence}
    pending = list(root.ContentSequence)
    while pending:
        item = pending.pop()
        for ref in item.get("ReferencedSOPSequence", []):
            uid = str(ref.ReferencedSOPInstanceUID)
            if uid not in known:
                raise ValueError(f"SR content references {uid}, which is not in its evidence")
        pending.extend(item.get("ContentSequence", []))


def _drop_segment_number_beside_frame(items: Sequence[Dataset]) -> None:
    """PS3.3 C.18.3: an IMAGE item referencing SEG frames must not also name the segment
    (highdicom writes both for TID 1410; dciodvfy rightly flags it)."""
    for item in items:
        for ref in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber
        _drop_segment_number_beside_frame(item.get("ContentSequence", []))


def write_sr(
    series: LoadedSeries, output: ModelOutput, spec: ModelSpec, seg: hd.seg.Segmentation, path: Path
) -> Dataset | None:
    sr = build_sr(series, output, spec, seg)
    if sr is not None:
        save_atomic(sr, path)
    return sr
