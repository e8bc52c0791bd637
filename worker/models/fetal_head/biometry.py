"""Ellipse fit and fetal biometry: HC (Ramanujan), BPD, OFD, gestational age (Hadlock).

Conventions (stated in outputs and docs): the ellipse is placed on the OUTER border of the
skull echo (ISUOG, HC18); BPD and OFD are the ellipse's minor and major axes, so BPD is
measured outer-to-outer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

#: Hadlock et al. 1984 (Radiology 152:497): GA(weeks) = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm.
HADLOCK_HC_RANGE_MM = (50.0, 370.0)
HADLOCK_HC_FORMULA = "Hadlock 1984: GA (weeks) = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm"
#: The variability (+/-2 SD, weeks) of the GA the HC formula predicts, tabulated with the
#: formula by HC (Hadlock FP, Deter RL, Harrist RB, Park SK. Estimating fetal age:
#: computer-assisted analysis of multiple fetal growth parameters. Radiology
#: 1984;152:497-501). Taken from the table "GA by HC - Hadlock1984" (its +/-2SD column) of the
#: Hologic SuperSonic MACH Obstetrical References (PM.LAB.175-A, Oct 2020), as transcribed in
#: github.com/drmanojkurmana/StewardMD, tools/tokos-build-hc18.mjs (commit 0b6d0ef): HC rows
#: 68-144 mm +/-1.19, 151-219 mm +/-1.48, 224-280 mm +/-2.06, 284-325 mm +/-2.98 and
#: 328-360 mm +/-3.20 weeks (predicted GA about 12.7-17.6, 18.1-23.9, 24.4-30.7, 31.2-36.8
#: and 37.3-42.4 weeks). Each pair is (largest HC of the rows in mm, +/-2 SD in weeks); an HC
#: between two tabulated rows takes the next, wider, variability.
HADLOCK_HC_2SD_WEEKS = ((144.0, 1.19), (219.0, 1.48), (280.0, 2.06), (325.0, 2.98), (360.0, 3.20))
#: The tabulated HC rows (mm): no variability is published outside them.
HADLOCK_HC_TABLE_MM = (68.0, 360.0)
HADLOCK_HC_SOURCE = (
    "Hadlock et al., Radiology 1984;152:497-501; +/-2 SD by HC as tabulated in the Hologic "
    "SuperSonic MACH Obstetrical References PM.LAB.175-A, 'GA by HC - Hadlock1984'"
)
BPD_CONVENTION = "outer-to-outer"
#: Cephalic index (BPD / OFD x 100) in utero: mean 78.3, and 1 SD either side (74-83) taken
#: as the normal range; outside it the BPD may misdate the pregnancy and the HC is the better
#: measure. Hadlock FP, Deter RL, Carpenter RJ, Park SK. Estimating fetal age: effect of head
#: shape on BPD. AJR Am J Roentgenol 1981;137:83-85 (316 studies, 14-40 weeks).
CEPHALIC_INDEX_MEAN = 78.3
CEPHALIC_INDEX_NORMAL = (74.0, 83.0)
CEPHALIC_INDEX_SOURCE = "Hadlock et al., AJR 1981;137:83 (mean 78.3, ±1 SD)"


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in millimetres: centre, semi-axes (a >= b) and angle of ``a`` in degrees."""

    cx: float
    cy: float
    a: float
    b: float
    angle_deg: float

    @property
    def circumference(self) -> float:
        return ramanujan_perimeter(self.a, self.b)


@dataclass(frozen=True)
class Biometry:
    head_circumference_mm: float
    biparietal_diameter_mm: float
    occipitofrontal_diameter_mm: float
    gestational_age_days: float | None  # None outside Hadlock's range

    @property
    def cephalic_index(self) -> float:
        """BPD / OFD x 100: the head's shape (dolichocephaly below the normal range,
        brachycephaly above it)."""
        return 100.0 * self.biparietal_diameter_mm / self.occipitofrontal_diameter_mm


def cephalic_index_normal(index: float) -> bool:
    """Whether ``index`` is within CEPHALIC_INDEX_NORMAL (Hadlock 1981)."""
    lo, hi = CEPHALIC_INDEX_NORMAL
    return lo <= index <= hi


def ramanujan_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of an ellipse's perimeter (semi-axes a, b)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def hadlock_ga_days(hc_mm: float) -> float | None:
    lo, hi = HADLOCK_HC_RANGE_MM
    if not lo <= hc_mm <= hi:
        return None
    hc_cm = hc_mm / 10.0
    return (8.96 + 0.540 * hc_cm + 0.0003 * hc_cm**3) * 7.0


def hadlock_ga_2sd_weeks(hc_mm: float) -> float | None:
    """The +/-2 SD (weeks) of the Hadlock HC formula's GA for ``hc_mm``; None outside the
    table's HC rows (HADLOCK_HC_TABLE_MM)."""
    lo, hi = HADLOCK_HC_TABLE_MM
    if not lo <= hc_mm <= hi:
        return None
    return next(sd2 for largest, sd2 in HADLOCK_HC_2SD_WEEKS if hc_mm <= largest)


def format_ga(days: float) -> str:
    """Completed weeks and days (``37w5d``): the one rule of worker.core.clinical_format."""
    from worker.core.clinical_format import gestational_age

    return gestational_age(days)


def largest_contour(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64] | None:
    """Points (x, y) in pixels of the outer contour of the largest blob, or None."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    biggest = max(contours, key=cv2.contourArea)
    if len(biggest) < 5:
        return None
    points: npt.NDArray[np.float64] = biggest[:, 0, :].astype(np.float64)
    return points


def fit_ellipse_mm(mask: npt.NDArray[np.bool_], spacing_mm: tuple[float, float]) -> Ellipse | None:
    """Fit an ellipse to the mask's outer contour in mm (spacing = (row, column) mm/pixel).

    Contour points are pixel centres of the boundary pixels; the outer edge of a pixel lies
    half a pixel further out, so the fitted semi-axes are grown by half a pixel.
    """
    points = largest_contour(mask)
    if points is None:
        return None
    row_mm, col_mm = spacing_mm
    scaled = np.column_stack([points[:, 0] * col_mm, points[:, 1] * row_mm]).astype(np.float32)
    (cx, cy), (d1, d2), angle = cv2.fitEllipse(scaled)
    half_pixel = 0.5 * (row_mm + col_mm) / 2.0
    a, b = d1 / 2.0 + half_pixel, d2 / 2.0 + half_pixel
    if b > a:
        a, b, angle = b, a, angle + 90.0
    return Ellipse(float(cx), float(cy), float(a), float(b), float(angle % 180.0))


def biometry(ellipse: Ellipse) -> Biometry:
    hc = ellipse.circumference
    return Biometry(
        head_circumference_mm=hc,
        biparietal_diameter_mm=2 * ellipse.b,
        occipitofrontal_diameter_mm=2 * ellipse.a,
        gestational_age_days=hadlock_ga_days(hc),
    )


def ellipse_mask(
    shape: tuple[int, int],
    ellipse: tuple[float, float, float, float, float],
    spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> npt.NDArray[np.bool_]:
    """A filled ellipse (cx, cy, a, b, angle in degrees) rasterised at ``shape``.

    The ellipse is in the units of ``spacing_mm`` (row, column): pixels by default, mm when
    the spacing is given, so anisotropic pixels are handled exactly.
    """
    rows, cols = shape
    cx, cy, a, b, angle = ellipse
    inside: npt.NDArray[np.bool_] = np.zeros(shape, dtype=bool)
    # Only the pixels of the circumscribed circle's bounding box (plus a margin) can be
    # inside; each of them is computed exactly as over the whole grid.
    radius = max(abs(a), abs(b))
    r0, r1, c0, c1 = 0, rows, 0, cols
    if all(math.isfinite(v) for v in (cx, cy, radius)) and min(spacing_mm) > 0:
        r0 = max(0, math.floor((cy - radius) / spacing_mm[0]) - 2)
        r1 = min(rows, math.ceil((cy + radius) / spacing_mm[0]) + 3)
        c0 = max(0, math.floor((cx - radius) / spacing_mm[1]) - 2)
        c1 = min(cols, math.ceil((cx + radius) / spacing_mm[1]) + 3)
    if r0 >= r1 or c0 >= c1:
        return inside
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    xx *= spacing_mm[1]
    yy *= spacing_mm[0]
    t = math.radians(angle)
    dx, dy = xx - cx, yy - cy
    u = dx * math.cos(t) + dy * math.sin(t)
    v = -dx * math.sin(t) + dy * math.cos(t)
    inside[r0:r1, c0:c1] = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return inside
