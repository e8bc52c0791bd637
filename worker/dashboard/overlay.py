"""A PNG of one result: the source image, each segment's contour and the measurements.

CT and MR: the middle slice of the series (or, when no mask touches it, the slice with the
largest mask). Ultrasound: the frame the SEG was made on (the measured frame of a cine).
Radiographs: the image, with the detection boxes of report.json (pneumonia findings).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom import Dataset
from pydicom.pixels.processing import apply_modality_lut, convert_color_space
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Job, Result, Series

logger = logging.getLogger(__name__)

#: Contour colours (BGR) by segment number: saturated, so they stand out on grey images
#: (the SEG's recommended display colours are muted on purpose).
PALETTE_BGR: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0),
    (255, 0, 255),
    (255, 255, 0),
    (0, 165, 255),
    (0, 0, 255),
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX

SourceKey = tuple[str, int | None]  # (SOP Instance UID, 1-based frame number or None)


#: Colour (BGR) of detection boxes (pneumonia findings): red, apart from the contours.
BOX_BGR = (0, 0, 255)

Box = tuple[str, float, tuple[float, float, float, float]]  # label, score, (x0, y0, x1, y1)


@dataclass
class _Job:
    seg_path: Path
    instances: list[tuple[str, Path, int | None]]  # (uid, path, instance number)
    measurements: list[str]
    report_path: Path | None = None


def read_findings(report_path: Path | None) -> list[Box]:
    """The ``findings`` of a job's report.json; none when it is missing or unreadable."""
    if report_path is None or not report_path.is_file():
        return []
    try:
        findings = json.loads(report_path.read_text()).get("findings", [])
        boxes: list[Box] = []
        for f in findings:
            x0, y0, x1, y1 = (float(v) for v in f["box_px"][:4])
            boxes.append((str(f["label"]), float(f["score"]), (x0, y0, x1, y1)))
        return boxes
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("report %s: findings unreadable (%s)", report_path, exc)
        return []


@dataclass
class _Seg:
    labels: dict[int, str]
    rows: int
    columns: int
    masks: dict[SourceKey, dict[int, npt.NDArray[np.uint8]]]


def _load_job(session_factory: sessionmaker[Session], job_id: int) -> _Job | None:
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
        return _Job(
            seg_path=Path(seg.path),
            instances=[
                (i.sop_instance_uid, Path(i.path), i.instance_number) for i in job.series.instances
            ],
            measurements=[f"{m.label}: {m.value:.1f} {m.unit}" for m in result.measurements],
            report_path=Path(report.path) if report is not None else None,
        )


def _read_seg(path: Path) -> _Seg:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    masks: dict[SourceKey, dict[int, npt.NDArray[np.uint8]]] = defaultdict(dict)
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
        masks[key][number] = (pixels[index] > 0).astype(np.uint8)
    return _Seg(labels, int(ds.Rows), int(ds.Columns), dict(masks))


def _choose(seg: _Seg, instances: list[tuple[str, Path, int | None]]) -> SourceKey:
    ordered = sorted(instances, key=lambda i: (i[2] is None, i[2] or 0, i[0]))
    middle: SourceKey | None = (ordered[len(ordered) // 2][0], None) if ordered else None
    area = {key: sum(int(m.sum()) for m in per.values()) for key, per in seg.masks.items()}
    if middle is not None and area.get(middle, 0) > 0:
        return middle
    if area and max(area.values()) > 0:
        return max(area, key=lambda k: area[k])
    if middle is not None:
        return middle
    return next(iter(seg.masks))


def _window(ds: Dataset, pixels: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low, high = c - w / 2, c + w / 2
    else:
        low, high = (float(v) for v in np.percentile(pixels, (1, 99)))
    scaled = np.clip((pixels - low) / max(high - low, 1e-6), 0, 1) * 255
    image = scaled.astype(np.uint8)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        image = 255 - image
    return image


def _source_image(path: Path, frame: int | None, rows: int, columns: int) -> npt.NDArray[np.uint8]:
    """The source frame as BGR; black when the input was purged by retention."""
    if not path.is_file():
        return np.zeros((rows, columns, 3), np.uint8)
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[(frame or 1) - 1]
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
    gray = _window(ds, np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64))
    return np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def _text_block(
    image: npt.NDArray[np.uint8], lines: list[tuple[str, tuple[int, int, int]]]
) -> None:
    """Lines of text at the top left on a darkened box, so they read on any image."""
    if not lines:
        return
    width = max(cv2.getTextSize(text, _FONT, 0.5, 1)[0][0] for text, _ in lines) + 12
    height = 18 * len(lines) + 8
    box = image[:height, :width]
    box[:] = (box * 0.35).astype(np.uint8)
    for n, (text, color) in enumerate(lines):
        cv2.putText(image, text, (6, 18 + 18 * n), _FONT, 0.5, color, 1, cv2.LINE_AA)


def draw_overlay(
    image: npt.NDArray[np.uint8],
    masks: dict[int, npt.NDArray[np.uint8]],
    labels: dict[int, str],
    lines: list[str],
    *,
    max_side: int = 512,
    boxes: list[Box] | None = None,
) -> npt.NDArray[np.uint8]:
    """Scale ``image`` (BGR) to ``max_side``, draw each mask's contour, the detection boxes
    (source pixel coordinates) with label and score, and the text lines."""
    rows, columns = image.shape[:2]
    scale = max_side / max(rows, columns)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    canvas = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    for number, mask in sorted(masks.items()):
        big = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        color = PALETTE_BGR[(number - 1) % len(PALETTE_BGR)]
        cv2.drawContours(canvas, contours, -1, color, 2, cv2.LINE_AA)
    for label, score, (x0, y0, x1, y1) in boxes or []:
        top_left = (round(x0 * scale), round(y0 * scale))
        cv2.rectangle(canvas, top_left, (round(x1 * scale), round(y1 * scale)), BOX_BGR, 2)
        caption = f"{label} {score:.2f}"
        origin = (top_left[0], max(12, top_left[1] - 4))
        cv2.putText(canvas, caption, origin, _FONT, 0.45, BOX_BGR, 1, cv2.LINE_AA)
    legend = [
        (labels.get(n, f"segment {n}"), PALETTE_BGR[(n - 1) % len(PALETTE_BGR)])
        for n in sorted(masks)
    ]
    _text_block(canvas, legend + [(line, (255, 255, 255)) for line in lines])
    return canvas


def render_job_overlay(
    session_factory: sessionmaker[Session], job_id: int, max_side: int = 512
) -> bytes | None:
    """PNG bytes for job ``job_id``'s latest result; None when it has no SEG."""
    job = _load_job(session_factory, job_id)
    if job is None or not job.seg_path.is_file():
        return None
    seg = _read_seg(job.seg_path)
    uid, frame = _choose(seg, job.instances)
    paths = {i[0]: i[1] for i in job.instances}
    image = _source_image(paths.get(uid, Path()), frame, seg.rows, seg.columns)
    lines = list(job.measurements)
    if not paths.get(uid, Path()).is_file():
        lines.append("input image purged (retention)")
    elif frame is not None:
        lines.append(f"frame {frame}")
    else:
        ordered = sorted(job.instances, key=lambda i: (i[2] is None, i[2] or 0, i[0]))
        index = next((n for n, i in enumerate(ordered) if i[0] == uid), 0)
        lines.append(f"slice {index + 1}/{len(ordered)}")
    # Findings name no image: drawn where the series is that one image (a radiograph).
    boxes = read_findings(job.report_path) if len(job.instances) == 1 else []
    masks = seg.masks.get((uid, frame), {})
    canvas = draw_overlay(image, masks, seg.labels, lines, max_side=max_side, boxes=boxes)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(encoded.tobytes())
