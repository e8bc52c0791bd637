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
    x, y = end
    (width, height), _ = cv2.getTextSize(label, _FONT, 0.5, 1)
    x = min(max(x + 6, 2), canvas.shape[1] - width - 2)
    y = min(max(y - 6, height + 2), canvas.shape[0] - 2)
    cv2.putText(canvas, label, (x, y), _FONT, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(canvas, label, (x, y), _FONT, 0.5, colour, 1, cv2.LINE_AA)


def draw_head_calipers(
    canvas: npt.NDArray[np.uint8], calipers: HeadCalipers, scale: float, colour: BGR
) -> None:
    """The HC ellipse in the head's colour, OFD and BPD calipers with their labels."""
    centre = _px(calipers.centre, scale)
    axes = (max(1, round(calipers.a * scale)), max(1, round(calipers.b * scale)))
    cv2.ellipse(canvas, centre, axes, calipers.angle_deg, 0, 360, colour, 2, cv2.LINE_AA)
    _caliper_line(canvas, calipers.ofd, scale, OFD_BGR, "OFD")
    _caliper_line(canvas, calipers.bpd, scale, BPD_BGR, "BPD")
