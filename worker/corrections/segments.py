"""A corrected SEG's segments matched to a result's: by segment label (case and spaces
ignored), else by segmented property type (the SNOMED code Slicer and OHIF keep when a
reviewer relabels a segment), and its masks read on the source series' frames (by the
source image each SEG frame references, so a SEG of a chest film reads as one of a CT)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from worker.export.outputs import CodedConcept, SegmentKind
from worker.export.seg_read import SegMasks
from worker.pipeline.loading import LoadedSeries


@dataclass(frozen=True)
class SegmentInfo:
    number: int
    label: str
    property_type: tuple[str, str]  # (code value, coding scheme)


def segments_of(seg: Dataset) -> list[SegmentInfo]:
    """The segments a SEG declares (Segment Sequence)."""
    found = []
    for item in seg.get("SegmentSequence", []):
        codes = item.get("SegmentedPropertyTypeCodeSequence", [])
        code = (
            (str(codes[0].CodeValue), str(codes[0].CodingSchemeDesignator)) if codes else ("", "")
        )
        found.append(SegmentInfo(int(item.SegmentNumber), str(item.get("SegmentLabel", "")), code))
    return found


def kind_of(seg: Dataset, number: int) -> SegmentKind:
    """A result SEG's segment ``number`` as a SegmentKind, to write it again."""
    item = next(i for i in seg.SegmentSequence if int(i.SegmentNumber) == number)

    def concept(name: str) -> CodedConcept:
        code = item.get(name)[0]
        return CodedConcept(
            str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning)
        )

    color = (128, 128, 128)
    if "RecommendedDisplayCIELabValue" in item:
        import highdicom as hd  # the worker's: the dashboard lists corrections without it

        lab = hd.color.CIELabColor.from_dicom_value(
            tuple(int(v) for v in item.RecommendedDisplayCIELabValue)
        )
        color = tuple(int(v) for v in lab.to_rgb())  # type: ignore[assignment]
    return SegmentKind(
        str(item.SegmentLabel),
        concept("SegmentedPropertyTypeCodeSequence"),
        color,
        concept("SegmentedPropertyCategoryCodeSequence"),
        str(item.get("SegmentDescription", "")),
    )


def _norm(label: str) -> str:
    return " ".join(label.casefold().split())


def match_segments(result: list[SegmentInfo], corrected: list[SegmentInfo]) -> dict[int, int]:
    """{result segment number: corrected segment number}: each result segment takes the
    corrected segment of the same label, else the one of the same property type when exactly
    one has it; a corrected segment is used once."""
    matched: dict[int, int] = {}
    used: set[int] = set()
    for ours in result:
        same = [
            c for c in corrected if c.number not in used and _norm(c.label) == _norm(ours.label)
        ]
        if not same:
            typed = [
                c
                for c in corrected
                if c.number not in used and c.property_type == ours.property_type
            ]
            same = typed if len(typed) == 1 else []
        if same:
            matched[ours.number] = same[0].number
            used.add(same[0].number)
    return matched


def masks_on_series(
    seg: SegMasks, series: LoadedSeries, numbers: list[int]
) -> npt.NDArray[np.bool_]:
    """The SEG's segments ``numbers`` on the series' frames, in the series' order:
    (frames, rows, columns, len(numbers)). Source frames the SEG does not cover are empty.

    Frames are placed by the source image (and frame) each SEG frame references, not by 3D
    geometry: a SEG of a radiograph or an ultrasound still has none (its Pixel Measures,
    where a writer kept them, lack the SliceThickness highdicom's reader requires)."""
    count, rows, columns = (int(n) for n in series.frames.shape[:3])
    if seg.frames and seg.shape != (rows, columns):
        raise ValueError(f"SEG frames are {seg.shape}, the series' images {(rows, columns)}")
    if len(series.datasets) == 1 and int(series.datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        uid = str(series.datasets[0].SOPInstanceUID)
        order = series.frame_order if series.frame_order is not None else list(range(count))
        keys = [(uid, int(i) + 1) for i in order]
    else:
        keys = [(str(ds.SOPInstanceUID), 1) for ds in series.datasets]
    masks = np.zeros((count, rows, columns, len(numbers)), dtype=bool)
    for index, key in enumerate(keys):
        found = seg.frames.get(key, {})
        for k, number in enumerate(numbers):
            if number in found:
                masks[index, ..., k] = found[number]
    return masks
