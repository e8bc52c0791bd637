"""Write a model's segments as a DICOM Segmentation (highdicom), strict and valid."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom import Dataset, config
from pydicom.sr.codedict import codes

from worker import __version__
from worker.core.registry import ModelSpec
from worker.export import iod_cache, sequence_bytes
from worker.export._seg_stills import join_stills
from worker.export.labels import series_description
from worker.export.numbering import (
    CONTENT_CREATOR,
    SEG_FALLBACK,
    SEG_OFFSET,
    derived_series_number,
    fit_words,
)
from worker.export.outputs import CodedConcept, ModelOutput
from worker.pipeline.loading import LoadedSeries

logger = logging.getLogger(__name__)

iod_cache.install()  # highdicom's IOD look-ups answered once (sr.py imports this module too)

ULTRASOUND_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"


def _code(concept: CodedConcept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def _color(rgb: tuple[int, int, int]) -> hd.color.CIELabColor:
    return hd.color.CIELabColor.from_rgb(*rgb)


def _single_frame_view(source: Dataset) -> Dataset:
    """The source's header as a single-frame image (highdicom cannot segment one frame of a
    multi-frame image without a frame of reference); the frame is referenced afterwards."""
    view = Dataset()
    view.file_meta = copy.deepcopy(source.file_meta)
    for element in source:
        if element.keyword != "PixelData":
            view.add(copy.deepcopy(element))
    view.SOPClassUID = ULTRASOUND_IMAGE
    for keyword in ("NumberOfFrames", "FrameTime", "FrameIncrementPointer", "FrameTimeVector"):
        if keyword in view:
            delattr(view, keyword)
    return view


def _reference_frame(seg: hd.seg.Segmentation, source: Dataset, frame_number: int) -> None:
    """Point the SEG's references at ``frame_number`` of the real multi-frame source. The
    Referenced Series Sequence names instances only (a frame number there is a Standard
    Extended attribute); highdicom shares its items with the Source Image Sequence, so the
    image references get their own copies first."""
    seg.SourceImageSequence = [copy.deepcopy(i) for i in seg.get("SourceImageSequence", [])]
    for group in seg.PerFrameFunctionalGroupsSequence:
        for derivation in group.get("DerivationImageSequence", []):
            for item in derivation.SourceImageSequence:
                item.ReferencedSOPClassUID = source.SOPClassUID
                item.ReferencedFrameNumber = frame_number
    for item in seg.get("SourceImageSequence", []):
        item.ReferencedSOPClassUID = source.SOPClassUID
        item.ReferencedFrameNumber = frame_number
    for series in seg.ReferencedSeriesSequence:
        series.ReferencedInstanceSequence = [
            copy.deepcopy(i) for i in series.ReferencedInstanceSequence
        ]
        for item in series.ReferencedInstanceSequence:
            item.ReferencedSOPClassUID = source.SOPClassUID
            if "ReferencedFrameNumber" in item:
                del item.ReferencedFrameNumber


def build_seg(series: LoadedSeries, output: ModelOutput, spec: ModelSpec) -> hd.seg.Segmentation:
    algorithm = hd.AlgorithmIdentificationSequence(
        name=spec.name,
        family=getattr(codes.cid7162, spec.algorithm_family),
        version=spec.version,
        source="medseg",
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.kind.label,
            segmented_property_category=_code(segment.kind.property_category),
            segmented_property_type=_code(segment.kind.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=_color(segment.kind.color),
        )
        for number, segment in enumerate(output.segments, start=1)
    ]
    for description, segment in zip(descriptions, output.segments, strict=True):
        if segment.kind.description:
            description.SegmentDescription = segment.kind.description[:64]  # LO
    stacked = segment_pixels([s.mask for s in output.segments])
    sources = series.datasets
    options = _Options(
        descriptions, derived_series_number(sources[0], SEG_OFFSET, SEG_FALLBACK), spec, output
    )
    if output.source_frame is not None and len(sources) == 1 and _frames(sources[0]) > 1:
        # One frame of a cine: segmented as a single-frame view, then referenced.
        seg = _segmentation([_single_frame_view(sources[0])], stacked, options)
        _reference_frame(seg, sources[0], output.source_frame + 1)
        return _finish(seg, sources[0])
    if output.source_frame is not None and len(sources) > 1:
        # One still of several: the SEG is of that image.
        source = sources[output.source_frame]
        return _finish(_segmentation([source], stacked, options), source)
    if "FrameOfReferenceUID" in sources[0]:
        # Enhanced multi-frame sources: masks go back to the image's own frame order.
        return _finish(_segmentation([*sources], series.file_order(stacked), options))
    if len(sources) == 1:
        return _finish(_segmentation(sources, stacked, options), sources[0])
    # Several stills without a frame of reference: one SEG per image, joined.
    uids = (hd.UID(), hd.UID())
    parts = [
        _segmentation([source], stacked[k : k + 1], options, uids)
        for k, source in enumerate(sources)
    ]
    return _finish(join_stills(parts), sources[0])


def segment_pixels(masks: list[npt.NDArray[np.bool_]]) -> npt.NDArray[np.uint8]:
    """The segments as highdicom's pixel array. Where no two overlap (the models' segments
    never do), a label map (frames, rows, columns; k in segment k's voxels, 0 elsewhere):
    highdicom then checks only its maximum and cuts each frame by one comparison, where the
    stack (frames, rows, columns, segments) costs a sum over the segments of every voxel to
    find overlaps (1.2 s of a 300-slice 512² CT's 2.4 s, docs/performance.md). The SEG is the
    same either way (tests/unit/worker/export/test_seg_pixels.py). Overlapping segments, or
    more than 255, go as the stack."""
    if len(masks) < 256:
        labels = np.zeros(masks[0].shape, dtype=np.uint8)
        for number, mask in enumerate(masks, start=1):
            if number > 1 and np.logical_and(labels, mask).any():
                break
            labels[mask] = number
        else:
            return labels
    stacked: npt.NDArray[np.uint8] = np.stack(masks, axis=-1).astype(np.uint8)
    return stacked


BINARY = hd.seg.SegmentationTypeValues.BINARY
FRACTIONAL = hd.seg.SegmentationTypeValues.FRACTIONAL


def encoding(columns: int) -> hd.seg.SegmentationTypeValues:
    """BINARY (1 bit per pixel), unless a frame's rows do not start on a byte: Orthanc 1.10
    cannot render such 1-bit frames (HTTP 415), so they are FRACTIONAL (8 bits, 0 or 255,
    probability semantics), which Orthanc, highdicom and dcmqi read alike."""
    return BINARY if columns % 8 == 0 else FRACTIONAL


def _frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


@dataclass(frozen=True)
class _Options:
    descriptions: list[hd.seg.SegmentDescription]
    series_number: int
    spec: ModelSpec
    output: ModelOutput


def _segmentation(
    sources: list[Dataset],
    stacked: npt.NDArray[np.uint8],
    options: _Options,
    uids: tuple[str, str] | None = None,  # (series, SOP instance); None: new ones
) -> hd.seg.Segmentation:
    segmentation_type = encoding(int(sources[0].Columns))
    pixels = stacked if segmentation_type == BINARY else _fractional(stacked, options)
    # pydicom validates every element highdicom creates (reading mode: warnings only), 0.25 s
    # of a 300-slice CT's SEG; its documented switch for values known to be valid. The SEG's
    # validity is held by dciodvfy in the tests and by highdicom's own checks.
    with config.disable_value_validation():
        return _highdicom_segmentation(sources, pixels, segmentation_type, options, uids)


def _highdicom_segmentation(
    sources: list[Dataset],
    pixels: npt.NDArray[np.uint8] | npt.NDArray[np.float32],
    segmentation_type: hd.seg.SegmentationTypeValues,
    options: _Options,
    uids: tuple[str, str] | None,
) -> hd.seg.Segmentation:
    spec, output = options.spec, options.output
    series_uid, instance_uid = uids or (hd.UID(), hd.UID())
    planar = "FrameOfReferenceUID" not in sources[0]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=segmentation_type,
        segment_descriptions=options.descriptions,
        series_instance_uid=series_uid,
        series_number=options.series_number,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=spec.name,
        software_versions=f"medseg {__version__}; {spec.name} {spec.version}",
        device_serial_number="0",
        series_description=series_description(f"medseg {spec.name}", output),
        content_label="MEDSEG",
        content_description=fit_words(spec.description),
        content_creator_name=CONTENT_CREATOR,
        # A planar SEG keeps a frame per segment and image, empty or not, so that an SR can
        # point at the frame of each segment on the measured image.
        omit_empty_frames=not planar,
    )
    return seg


def _fractional(stacked: npt.NDArray[np.uint8], options: _Options) -> npt.NDArray[np.float32]:
    """The stack of segments as 0.0/1.0 (highdicom scales them to 0/255), from a label map
    too: a label map's values are segment numbers, not fractions."""
    if stacked.ndim == 3:
        numbers = range(1, len(options.descriptions) + 1)
        stacked = np.stack([stacked == n for n in numbers], axis=-1).astype(np.uint8)
    return stacked.astype(np.float32)


def _finish(seg: hd.seg.Segmentation, planar_source: Dataset | None = None) -> hd.seg.Segmentation:
    if "FrameOfReferenceUID" not in seg and planar_source is not None:
        # General Image module: Patient Orientation is Type 2C without a frame of reference.
        seg.PatientOrientation = planar_source.get("PatientOrientation", "")
        _drop_unusable_pixel_measures(seg)
    return seg


def _drop_unusable_pixel_measures(seg: hd.seg.Segmentation) -> None:
    """Without a frame of reference the shared Pixel Measures group is optional; highdicom
    copies a radiograph's PixelSpacing into it without SliceThickness, which its own reader
    then refuses, and RG1_UNCI.dcm's (pydicom-data) PixelSpacing 0\\0 is invalid there too
    (dciodvfy). Such a group goes; the source images keep their spacing."""
    for group in seg.get("SharedFunctionalGroupsSequence", []):
        for measures in group.get("PixelMeasuresSequence", []):
            spacing = measures.get("PixelSpacing")
            zero = spacing is not None and min(float(v) for v in spacing) <= 0
            if zero or "SliceThickness" not in measures:
                del group.PixelMeasuresSequence
                break


def save_atomic(ds: Dataset, path: Path) -> None:
    """Write ``ds`` beside ``path`` and move it there; its sequences (a SEG's per-frame
    functional groups, an SR's content tree) encoded by ``sequence_bytes``: the same bytes in
    a fraction of pydicom's time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with sequence_bytes.pre_encoded(ds):
        ds.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)


def write_seg(
    series: LoadedSeries, output: ModelOutput, spec: ModelSpec, path: Path
) -> hd.seg.Segmentation:
    """Build the SEG and save it at ``path``; returns it."""
    seg = build_seg(series, output, spec)
    save_atomic(seg, path)
    return seg
