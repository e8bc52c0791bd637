"""The fetal head as the sonographer measured it: the HC ellipse and the BPD and OFD calipers.

The ellipse is fitted to the SEG mask the way the model measured it
(worker.models.fetal_head.biometry.fit_ellipse_mm, on the outer border of the skull); OFD is
its major axis and BPD its minor axis (outer-to-outer), each drawn between its two endpoints
with a caliper cross at each end and a label. Pixels are taken as square here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from worker.dashboard.drawing import outlined_text
from worker.dashboard.palette import BGR, BPD_BGR, OFD_BGR

Point = tuple[float, float]
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class HeadCalipers:
    """In source pixels: the ellipse (centre, semi-axes a >= b, angle of a in degrees) and the
    endpoints of OFD (along a) and BPD (along b)."""

    centre: Point
    a: float
    b: float
    angle_deg: float
    ofd: tuple[Point, Point]
    bpd: tuple[Point, Point]


def head_calipers(mask: npt.NDArray[np.uint8]) -> HeadCalipers | None:
    """The HC ellipse and its calipers for a head mask; None when no ellipse fits."""
    from worker.models.fetal_head.biometry import fit_ellipse_mm

    ellipse = fit_ellipse_mm(mask.astype(bool), (1.0, 1.0))
    if ellipse is None:
        return None
    theta = math.radians(ellipse.angle_deg)
    major = (math.cos(theta), math.sin(theta))
    minor = (-math.sin(theta), math.cos(theta))
    cx, cy = ellipse.cx, ellipse.cy

    def ends(direction: Point, half: float) -> tuple[Point, Point]:
        dx, dy = direction[0] * half, direction[1] * half
        return (cx - dx, cy - dy), (cx + dx, cy + dy)

    return HeadCalipers(
        (cx, cy),
        ellipse.a,
        ellipse.b,
        ellipse.angle_deg,
        ofd=ends(major, ellipse.a),
        bpd=ends(minor, ellipse.b),
    )


def _px(point: Point, scale: float) -> tuple[int, int]:
    return round(point[0] * scale), round(point[1] * scale)


def _caliper_line(
    canvas: npt.NDArray[np.uint8], ends: tuple[Point, Point], scale: float, colour: BGR, label: str
) -> None:
    start, end = _px(ends[0], scale), _px(ends[1], scale)
    cv2.line(canvas, start, end, colour, 1, cv2.LINE_AA)
    for x, y in (start, end):  # a caliper cross at each end
        cv2.drawMarker(canvas, (x, y), colour, cv2.MARKER_CROSS, 12, 2)
    (width, height), _ = cv2.getTextSize(label, _FONT, 0.5, 1)
    x, y = label_origin(start, end, (width, height), canvas.shape[:2])
    outlined_text(canvas, label, (x, y), 0.5, colour)


CROSS_HALF = 7  # half the caliper cross (size 12, thickness 2), rounded up


def _overlaps(box: tuple[int, int, int, int], point: tuple[int, int]) -> bool:
    x0, y0, x1, y1 = box
    px, py = point
    return not (
        x1 < px - CROSS_HALF or x0 > px + CROSS_HALF or y1 < py - CROSS_HALF or y0 > py + CROSS_HALF
    )


def label_origin(
    start: tuple[int, int],
    end: tuple[int, int],
    size: tuple[int, int],
    shape: tuple[int, ...],
) -> tuple[int, int]:
    """Where a caliper's label goes (its text origin, bottom left): beyond ``end`` along the
    caliper, else beside it, in the image and clear of both caliper crosses."""
    width, height = size
    rows, columns = shape[0], shape[1]
    dx, dy = end[0] - start[0], end[1] - start[1]
    norm = max(1.0, math.hypot(dx, dy))
    ux, uy = dx / norm, dy / norm
    gap = CROSS_HALF + 4
    candidates = []
    for vx, vy in ((ux, uy), (-uy, ux), (uy, -ux), (-ux, -uy)):
        # The box's centre far enough along (vx, vy) that its nearest side is ``gap`` away.
        reach = gap + abs(vx) * width / 2 + abs(vy) * height / 2
        cx, cy = end[0] + vx * reach, end[1] + vy * reach
        candidates.append((round(cx - width / 2), round(cy + height / 2)))
    clamped = []
    for wanted_x, wanted_y in candidates:
        x = min(max(wanted_x, 2), columns - width - 2)
        y = min(max(wanted_y, height + 2), rows - 3)
        box = (x, y - height, x + width, y + 2)
        if not _overlaps(box, start) and not _overlaps(box, end):
            return x, y
        clamped.append((x, y))
    return clamped[0]


def draw_head_calipers(
    canvas: npt.NDArray[np.uint8], calipers: HeadCalipers, scale: float, colour: BGR
) -> None:
    """The HC ellipse in the head's colour, OFD and BPD calipers with their labels."""
    centre = _px(calipers.centre, scale)
    axes = (max(1, round(calipers.a * scale)), max(1, round(calipers.b * scale)))
    cv2.ellipse(canvas, centre, axes, calipers.angle_deg, 0, 360, colour, 2, cv2.LINE_AA)
    _caliper_line(canvas, calipers.ofd, scale, OFD_BGR, "OFD")
    _caliper_line(canvas, calipers.bpd, scale, BPD_BGR, "BPD")
