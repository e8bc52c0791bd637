"""A PNG of one result at one position of its series: the image through a window preset,
each segment's contour in its structure's colour, the fetal head's HC ellipse with BPD/OFD
calipers, detection boxes, and R/L (A/P, H/F) markers at the middle of the edges, away from
the corners where modalities burn in text.

Nothing is written over the image but those (and a NOT FOR CLINICAL USE band where it
applies); a band under the image names each drawing component with its validation status.
The legend and the measurements are HTML beside it on the study page (``overlay_view``),
or, with ``legend=True``, a margin to the right of the image in the PNG itself, wrapped so
no value loses its unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from worker.core.clinical_format import format_measurement
from worker.dashboard.calipers import draw_head_calipers, head_calipers
from worker.dashboard.drawing import outlined_text
from worker.dashboard.orientation import Edges, image_edges
from worker.dashboard.overlay_source import (
    Box,
    JobSource,
    SegMasks,
    SegSegment,
    default_position,
    load_job,
    read_caution,
    read_findings,
    read_header,
    read_seg,
    read_statuses,
    source_image,
)
from worker.dashboard.palette import BGR, BOX_BGR, hex_colour, structure_colour, structure_rank
from worker.dashboard.windowing import Preset, presets_for

logger = logging.getLogger(__name__)

__all__ = [
    "BOX_BGR",
    "draw_overlay",
    "overlay_view",
    "read_caution",
    "read_findings",
    "render_job_overlay",
]

HEAD_CODE = "69536005"  # SNOMED CT "Head": the fetal head model's segment
LEGEND_WIDTH = 320
_FONT = cv2.FONT_HERSHEY_SIMPLEX


class OverlayRequestError(ValueError):
    """A position or window the job does not have: 404 or 400, with a one-line message."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True)
class LegendEntry:
    label: str
    colour: str  # #rrggbb


@dataclass(frozen=True)
class OverlayView:
    """What the study page shows beside a job's overlay, and the bounds of its controls."""

    positions: int
    position: int  # shown first, 1-based
    kind: str  # "slice" or "frame"
    presets: list[Preset]  # the default first; none for a colour image
    legend: list[LegendEntry]
    edges: Edges | None
    measurements: list[tuple[str, str]]  # label, formatted value
    purged: bool  # retention removed the input: contours on black


def _segment_colour(number: int, segment: SegSegment) -> BGR:
    return structure_colour(segment.code, segment.label, number)


def _marker(canvas: npt.NDArray[np.uint8], text: str, where: str) -> None:
    """A white letter on a dark halo (a darkened box under a black outline), so it reads on
    a white film as on a black one, as viewers draw them."""
    (width, height), _ = cv2.getTextSize(text, _FONT, 0.6, 2)
    rows, columns = canvas.shape[:2]
    x = {"left": 6, "right": columns - width - 6}.get(where, (columns - width) // 2)
    y = {"top": height + 6, "bottom": rows - 8}.get(where, (rows + height) // 2)
    y0, y1 = max(0, y - height - 4), min(rows, y + 5)
    x0, x1 = max(0, x - 4), min(columns, x + width + 4)
    canvas[y0:y1, x0:x1] = (canvas[y0:y1, x0:x1] * 0.2).astype(np.uint8)
    cv2.putText(canvas, text, (x, y), _FONT, 0.6, (0, 0, 0), 5, cv2.LINE_AA)
    cv2.putText(canvas, text, (x, y), _FONT, 0.6, (255, 255, 255), 2, cv2.LINE_AA)


def draw_overlay(
    image: npt.NDArray[np.uint8],
    masks: dict[int, npt.NDArray[np.uint8]],
    segments: dict[int, SegSegment],
    *,
    max_side: int = 512,
    boxes: list[Box] | None = None,
    edges: Edges | None = None,
    caution: str | None = None,
    statuses: list[tuple[str, str]] | None = None,
) -> npt.NDArray[np.uint8]:
    """Scale ``image`` (BGR) to ``max_side`` and draw each mask's contour (a fetal head as
    its HC ellipse with calipers), the detection boxes (source pixel coordinates) with label,
    score and, when the detector has a status of its own below validated-real, that status
    (the box dashed), the orientation markers, ``caution`` (NOT FOR CLINICAL USE ...) across
    the top, and ``statuses`` ((component, validation status) of what is drawn) in a band
    under the image, so no copy of the picture loses them."""
    rows, columns = image.shape[:2]
    scale = max_side / max(rows, columns)
    size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
    canvas = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
    for number, mask in sorted(masks.items()):
        segment = segments.get(number, SegSegment(f"segment {number}", None))
        colour = _segment_colour(number, segment)
        calipers = head_calipers(mask) if segment.code == HEAD_CODE else None
        if calipers is not None:
            draw_head_calipers(canvas, calipers, scale, colour)
            continue
        big = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, contours, -1, colour, 2, cv2.LINE_AA)
    for found in boxes or []:
        _box(canvas, found, scale)
    if edges is not None:
        for where in ("left", "right", "top", "bottom"):
            _marker(canvas, getattr(edges, where), where)
    if caution:
        _caution(canvas, caution)
    if statuses:
        canvas = np.vstack([canvas, _status_band(canvas.shape[1], statuses)])
    return canvas


def _dashed_rectangle(
    canvas: npt.NDArray[np.uint8], p0: tuple[int, int], p1: tuple[int, int], colour: BGR
) -> None:
    (x0, y0), (x1, y1) = p0, p1
    for a, b in (
        ((x0, y0), (x1, y0)),
        ((x1, y0), (x1, y1)),
        ((x1, y1), (x0, y1)),
        ((x0, y1), (x0, y0)),
    ):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for start in range(0, length, 12):
            end = min(start + 6, length)
            s = (a[0] + (b[0] - a[0]) * start // length, a[1] + (b[1] - a[1]) * start // length)
            e = (a[0] + (b[0] - a[0]) * end // length, a[1] + (b[1] - a[1]) * end // length)
            cv2.line(canvas, s, e, colour, 2)


def _box(canvas: npt.NDArray[np.uint8], found: Box, scale: float) -> None:
    """One detection box; its caption kept inside the image, whatever the box's place."""
    x0, y0, x1, y1 = found.box
    top_left = (round(x0 * scale), round(y0 * scale))
    bottom_right = (round(x1 * scale), round(y1 * scale))
    unproven = found.validation not in (None, "validated-real")
    if unproven:
        _dashed_rectangle(canvas, top_left, bottom_right, BOX_BGR)
    else:
        cv2.rectangle(canvas, top_left, bottom_right, BOX_BGR, 2)
    caption = f"{found.label} {found.score:.2f}" + (f" ({found.validation})" if unproven else "")
    rows, columns = canvas.shape[:2]
    size = 0.45
    (width, height), _ = cv2.getTextSize(caption, _FONT, size, 1)
    while width > columns - 4 and size > 0.25:
        size -= 0.05
        (width, height), _ = cv2.getTextSize(caption, _FONT, size, 1)
    x = min(max(2, top_left[0]), max(2, columns - width - 3))
    y = top_left[1] - 4 if top_left[1] - 4 >= height + 2 else bottom_right[1] + height + 4
    y = min(max(height + 2, y), rows - 3)
    outlined_text(canvas, caption, (x, y), size, BOX_BGR)


def _status_band(columns: int, statuses: list[tuple[str, str]]) -> npt.NDArray[np.uint8]:
    """``component: status`` for each part of what is drawn, in a black band to go under
    the image (red where the status is below validated-real): below it, not over it, so no
    pixel of the image is hidden."""
    parts = [(f"{name}: {status}", status) for name, status in statuses]
    text = "  ".join(p for p, _ in parts)
    size = 0.42
    (width, height), _ = cv2.getTextSize(text, _FONT, size, 1)
    while width > columns - 8 and size > 0.25:
        size -= 0.03
        (width, height), _ = cv2.getTextSize(text, _FONT, size, 1)
    band = np.zeros((height + 10, columns, 3), np.uint8)
    x = 4
    for part, status in parts:
        colour = (255, 255, 255) if status == "validated-real" else BOX_BGR
        cv2.putText(band, part, (x, height + 4), _FONT, size, colour, 1, cv2.LINE_AA)
        x += cv2.getTextSize(part + "  ", _FONT, size, 1)[0][0]
    return band


def _caution(canvas: npt.NDArray[np.uint8], text: str) -> None:
    """``text`` in a black band across the image, below the top orientation marker."""
    columns = canvas.shape[1]
    scale = 0.5
    (width, height), _ = cv2.getTextSize(text, _FONT, scale, 1)
    while width > columns - 8 and scale > 0.25:
        scale -= 0.05
        (width, height), _ = cv2.getTextSize(text, _FONT, scale, 1)
    top = min(28, max(0, canvas.shape[0] - height - 8))
    canvas[top : top + height + 8] = 0
    cv2.putText(canvas, text, (4, top + height + 3), _FONT, scale, BOX_BGR, 1, cv2.LINE_AA)


def add_legend(
    canvas: npt.NDArray[np.uint8], lines: list[tuple[str, BGR]]
) -> npt.NDArray[np.uint8]:
    """``canvas`` with a dark margin of ``LEGEND_WIDTH`` to its right holding ``lines``: the
    image itself is left as it was."""
    rows = [(part, colour) for text, colour in lines for part in wrap_legend(text)]
    height = max(canvas.shape[0], 18 * len(rows) + 12)
    out = np.full((height, canvas.shape[1] + LEGEND_WIDTH, 3), 24, np.uint8)
    out[: canvas.shape[0], : canvas.shape[1]] = canvas
    x = canvas.shape[1] + 8
    for n, (text, colour) in enumerate(rows):
        cv2.putText(out, text, (x, 20 + 18 * n), _FONT, 0.42, colour, 1, cv2.LINE_AA)
    return out


def wrap_legend(text: str, width: int = LEGEND_WIDTH - 16) -> list[str]:
    """``text`` in lines that fit ``width`` pixels of the legend, broken between words
    (a continuation indented), so no value loses its unit at the margin's edge."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and cv2.getTextSize(candidate, _FONT, 0.42, 1)[0][0] > width:
            lines.append(current)
            candidate = f"  {word}"
        current = candidate
    lines.append(current)
    return lines


def _kind(source: JobSource) -> str:
    return "frame" if source.positions and source.positions[0].frame is not None else "slice"


def _preset(source: JobSource, window: str | None) -> Preset:
    presets = presets_for(source.modality)
    if not window:
        return presets[0]
    found = next((p for p in presets if p.name == window), None)
    if found is None:
        names = ", ".join(p.name for p in presets)
        raise OverlayRequestError(400, f"no window {window!r} for {source.modality}: {names}")
    return found


def _in_order(seg: SegMasks) -> list[tuple[int, SegSegment]]:
    """The segments in one order whatever the model: known structures as the palette lists
    them (right lung before left, on CT as on a film), then the others by number."""
    return sorted(
        seg.segments.items(),
        key=lambda item: (structure_rank(item[1].code, item[1].label), item[0]),
    )


def _legend(seg: SegMasks) -> list[LegendEntry]:
    return [LegendEntry(s.label, hex_colour(_segment_colour(n, s))) for n, s in _in_order(seg)]


def overlay_view(session_factory: sessionmaker[Session], job_id: int) -> OverlayView | None:
    """The study page's viewer for job ``job_id``; None when it has no readable SEG."""
    source = load_job(session_factory, job_id)
    if source is None or not source.seg_path.is_file():
        return None
    seg = read_seg(source.seg_path)
    position = default_position(seg, source.positions)
    header = read_header(source.positions[position - 1]) if source.positions else None
    colour = header is not None and int(header.get("SamplesPerPixel", 1) or 1) == 3
    return OverlayView(
        positions=len(source.positions),
        position=position,
        kind=_kind(source),
        # Colour images (most ultrasound) are shown as sent: no window to choose.
        presets=[] if colour else list(presets_for(source.modality)),
        legend=_legend(seg),
        edges=image_edges(header) if header is not None else None,
        measurements=[
            (label, str(format_measurement(v, u))) for label, v, u in source.measurements
        ],
        purged=header is None,
    )


def render_job_overlay(
    session_factory: sessionmaker[Session],
    job_id: int,
    max_side: int = 512,
    *,
    position: int | None = None,
    window: str | None = None,
    legend: bool = False,
) -> bytes | None:
    """PNG bytes for job ``job_id``'s latest result at ``position`` (1-based; default: the
    one ``overlay_view`` shows first); None when it has no SEG. Raises OverlayRequestError
    for a position or window the job does not have."""
    source = load_job(session_factory, job_id)
    if source is None or not source.seg_path.is_file():
        return None
    seg = read_seg(source.seg_path)
    count = len(source.positions)
    if position is None:
        position = default_position(seg, source.positions)
    elif position < 1:
        raise OverlayRequestError(400, f"{_kind(source)} numbers start at 1, not {position}")
    elif position > count:
        raise OverlayRequestError(
            404, f"job {job_id} has no {_kind(source)} {position} (1-{count})"
        )
    preset = _preset(source, window)
    shown = source.positions[position - 1]
    image = source_image(shown, preset, seg.rows, seg.columns)
    header = read_header(shown)
    # Findings name no image: drawn where the series is that one image (a radiograph).
    boxes = read_findings(source.report_path) if count == 1 else []
    canvas = draw_overlay(
        image,
        seg.masks((shown.uid, shown.frame)),
        seg.segments,
        max_side=max_side,
        boxes=boxes,
        edges=image_edges(header) if header is not None else None,
        caution=read_caution(source.report_path),
        statuses=read_statuses(source.report_path),
    )
    if legend:
        lines = [(s.label, _segment_colour(n, s)) for n, s in _in_order(seg)]
        lines += [
            (f"{label}: {format_measurement(v, u)}", (255, 255, 255))
            for label, v, u in source.measurements
        ]
        note = (
            "input purged (retention)" if header is None else f"{_kind(source)} {position}/{count}"
        )
        lines.append((note, (200, 200, 200)))
        canvas = add_legend(canvas, lines)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(encoded.tobytes())
