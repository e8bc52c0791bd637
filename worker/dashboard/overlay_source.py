"""What an overlay is drawn from: a job's series as positions to scroll through, its SEG's
masks per source frame, and one position's image through a window preset.

A position is one displayable frame, numbered from 1: the instances of the series in
Instance Number order (CT, MR slices), or the frames of a single multi-frame instance (an
ultrasound cine). Parsed SEGs are kept in a small in-process cache (masks bit-packed), so
scrolling through a long series does not read the SEG again for every slice.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import Dataset
from pydicom.pixels.processing import apply_modality_lut, convert_color_space
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Job, Result, Series
from worker.dashboard.windowing import Preset, apply_window

logger = logging.getLogger(__name__)

SourceKey = tuple[str, int | None]  # (SOP Instance UID, 1-based frame number or None)


class Box(NamedTuple):
    """A detection box in source pixels (x0, y0, x1, y1), with the validation status of the
    component that found it (None: the result's own)."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    validation: str | None = None


@dataclass(frozen=True)
class Position:
    uid: str
    path: Path
    frame: int | None  # 1-based frame of a multi-frame instance; None: a single-frame one


@dataclass
class JobSource:
    modality: str
    seg_path: Path
    positions: list[Position]
    measurements: list[tuple[str, float, str]]  # label, value, UCUM unit
    report_path: Path | None = None


@dataclass(frozen=True)
class SegSegment:
    label: str
    code: str | None  # SNOMED CT code of its Segmented Property Type


@dataclass
class SegMasks:
    segments: dict[int, SegSegment]
    rows: int
    columns: int
    packed: dict[SourceKey, dict[int, npt.NDArray[np.uint8]]] = field(default_factory=dict)

    def masks(self, key: SourceKey) -> dict[int, npt.NDArray[np.uint8]]:
        """The masks (0/1, rows x columns) of the segments drawn on ``key``'s frame."""
        found = self.packed.get(key)
        if found is None and key[1] is None:  # a single-frame source named as frame 1
            found = self.packed.get((key[0], 1))
        return {
            n: np.unpackbits(bits, axis=-1, count=self.columns) for n, bits in (found or {}).items()
        }

    def area(self, key: SourceKey) -> int:
        return sum(int(m.sum()) for m in self.masks(key).values())


def _frames(path: Path) -> int:
    if not path.is_file():
        return 1
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    return int(ds.get("NumberOfFrames", 1) or 1)


def load_job(session_factory: sessionmaker[Session], job_id: int) -> JobSource | None:
    """The job's latest result's SEG and its series as positions; None without a SEG."""
    with session_factory() as session:
        job = session.get(
            Job,
            job_id,
            options=[
                selectinload(Job.results).selectinload(Result.outputs),
                selectinload(Job.results).selectinload(Result.measurements),
                selectinload(Job.series).selectinload(Series.instances),
            ],
        )
        if job is None or not job.results:
            return None
        result = job.results[-1]
        seg = next((o for o in result.outputs if o.kind == "seg"), None)
        if seg is None:
            return None
        report = next((o for o in result.outputs if o.kind == "json"), None)
        instances = sorted(
            job.series.instances,
            key=lambda i: (i.instance_number is None, i.instance_number or 0, i.sop_instance_uid),
        )
        positions = [Position(i.sop_instance_uid, Path(i.path), None) for i in instances]
        if len(instances) == 1 and (count := _frames(positions[0].path)) > 1:
            only = positions[0]
            positions = [Position(only.uid, only.path, n) for n in range(1, count + 1)]
        return JobSource(
            modality=job.series.modality,
            seg_path=Path(seg.path),
            positions=positions,
            measurements=[(m.label, m.value, m.unit) for m in result.measurements],
            report_path=Path(report.path) if report is not None else None,
        )


def _code(item: Dataset) -> str | None:
    sequence = item.get("SegmentedPropertyTypeCodeSequence")
    return str(sequence[0].CodeValue) if sequence else None


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int, size: int) -> SegMasks:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    segments = {
        int(s.SegmentNumber): SegSegment(str(s.SegmentLabel), _code(s)) for s in ds.SegmentSequence
    }
    packed: dict[SourceKey, dict[int, npt.NDArray[np.uint8]]] = defaultdict(dict)
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else {}
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        # A macro sits per frame, or once in the shared groups when all frames agree.
        ident = (
            group.get("SegmentIdentificationSequence") or shared["SegmentIdentificationSequence"]
        )
        number = int(ident[0].ReferencedSegmentNumber)
        derivation = group.get("DerivationImageSequence") or shared["DerivationImageSequence"]
        source = derivation[0].SourceImageSequence[0]
        frame = int(source.ReferencedFrameNumber) if "ReferencedFrameNumber" in source else None
        key = (str(source.ReferencedSOPInstanceUID), frame)
        packed[key][number] = np.packbits(pixels[index] > 0, axis=-1)
    return SegMasks(segments, int(ds.Rows), int(ds.Columns), dict(packed))


def read_seg(path: Path) -> SegMasks:
    """The SEG at ``path``, parsed once per version of the file."""
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)


def default_position(seg: SegMasks, positions: list[Position]) -> int:
    """The position (1-based) shown first: the middle slice when a mask touches it, else the
    position with the largest mask (the measured frame of a cine), else the middle one."""
    if not positions:
        return 1
    middle = len(positions) // 2
    areas = [seg.area((p.uid, p.frame)) for p in positions]
    if areas[middle] > 0 or max(areas) == 0:
        return middle + 1
    return int(np.argmax(areas)) + 1


def read_findings(report_path: Path | None) -> list[Box]:
    """The ``findings`` of a job's report.json; none when it is missing or unreadable."""
    if report_path is None or not report_path.is_file():
        return []
    try:
        findings = json.loads(report_path.read_text()).get("findings", [])
        boxes: list[Box] = []
        for f in findings:
            x0, y0, x1, y1 = (float(v) for v in f["box_px"][:4])
            status = f.get("validation")
            boxes.append(
                Box(str(f["label"]), float(f["score"]), (x0, y0, x1, y1), status and str(status))
            )
        return boxes
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("report %s: findings unreadable (%s)", report_path, exc)
        return []


def read_statuses(report_path: Path | None) -> list[tuple[str, str]]:
    """What the image must say it was drawn by: (component, validation status) for the
    model that drew the contours and each component of its own (the pneumonia detector),
    from the job's report.json; none when it is missing or unreadable (the caution then
    says so)."""
    if report_path is None or not report_path.is_file():
        return []
    try:
        report = json.loads(report_path.read_text())
        model = str(report.get("model") or "model")
        status = report.get("model_validation") or report.get("validation")
        shown = [(model, str(status or "unknown"))]
        components = report.get("components") or {}
        shown += [(str(name), str(s)) for name, s in sorted(components.items())]
        return shown
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("report %s: unreadable (%s)", report_path, exc)
        return []


def read_caution(report_path: Path | None) -> str | None:
    """What the image itself must say when the job's report.json marks its result not for
    clinical use (a phantom-only model, or a research component such as the pneumonia
    detector): ``NOT FOR CLINICAL USE (phantom-only)``; None otherwise. An unreadable report
    is taken as not for clinical use: the overlay cannot vouch for it."""
    if report_path is None or not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text())
        flagged = bool(report.get("not_for_clinical_use", False))
        statuses = {str(f.get("validation")) for f in report.get("findings", [])}
        statuses.discard("None")
        statuses.discard("validated-real")
        statuses.discard("reference-only")
        if not flagged and not statuses:
            return None
        shown = statuses | ({str(report.get("validation"))} if flagged else set())
        return f"NOT FOR CLINICAL USE ({', '.join(sorted(shown))})"
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("report %s: unreadable (%s)", report_path, exc)
        return "NOT FOR CLINICAL USE (report unreadable)"


def read_header(position: Position) -> Dataset | None:
    """The position's instance without its pixels (orientation); None when purged."""
    if not position.path.is_file():
        return None
    return pydicom.dcmread(position.path, stop_before_pixels=True)


def source_image(position: Position, preset: Preset, rows: int, columns: int) -> np.ndarray:
    """The position's frame as BGR through ``preset``; black when retention purged it."""
    if not position.path.is_file():
        return np.zeros((rows, columns, 3), np.uint8)
    ds = pydicom.dcmread(position.path)
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[(position.frame or 1) - 1]
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        if (
            str(ds.PhotometricInterpretation).startswith("YBR")
            and not ds.file_meta.get(
                "TransferSyntaxUID", pydicom.uid.ExplicitVRLittleEndian
            ).is_compressed
        ):
            pixels = convert_color_space(pixels, str(ds.PhotometricInterpretation), "RGB")
        rgb = np.asarray(pixels, dtype=np.uint8)
        return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), dtype=np.uint8)
    grey = apply_window(ds, np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64), preset)
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
