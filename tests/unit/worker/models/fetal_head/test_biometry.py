from __future__ import annotations

import math

import numpy as np
import pytest

from worker.models.fetal_head.biometry import (
    Ellipse,
    biometry,
    cephalic_index_normal,
    ellipse_mask,
    fit_ellipse_mm,
    format_ga,
    hadlock_ga_2sd_weeks,
    hadlock_ga_days,
    ramanujan_perimeter,
)


def test_ramanujan_is_exact_for_a_circle_and_close_for_ellipses() -> None:
    assert ramanujan_perimeter(10, 10) == pytest.approx(2 * math.pi * 10)
    # Exact perimeter of a=2, b=1 (complete elliptic integral): 9.688448220547675...
    assert ramanujan_perimeter(2, 1) == pytest.approx(9.688448220547675, rel=1e-9)


def test_hadlock_ga_from_hc() -> None:
    # Hadlock 1984: GA(weeks) = 8.96 + 0.540 HC + 0.0003 HC^3 (HC in cm).
    assert hadlock_ga_days(175.0) / 7 == pytest.approx(8.96 + 0.540 * 17.5 + 0.0003 * 17.5**3)
    assert hadlock_ga_days(20.0) is None and hadlock_ga_days(500.0) is None
    assert format_ga(20 * 7 + 3) == "20w3d"


#: Rows of the table "GA by HC - Hadlock1984" (HC cm -> predicted GA weeks) of the Hologic
#: SuperSonic MACH Obstetrical References (PM.LAB.175-A, Oct 2020), as quoted in
#: github.com/drmanojkurmana/StewardMD (tests of tools/tokos-build-hc18.mjs).
HADLOCK_TABLE_ROWS = (
    (6.8, 12.7263),
    (15.1, 18.1469),
    (22.4, 24.4278),
    (30.1, 33.3953),
    (36.0, 42.3968),
)


@pytest.mark.parametrize(("hc_cm", "weeks"), HADLOCK_TABLE_ROWS)
def test_hadlock_formula_gives_the_tabulated_ga(hc_cm: float, weeks: float) -> None:
    days = hadlock_ga_days(hc_cm * 10)
    assert days is not None and days / 7 == pytest.approx(weeks, abs=0.0006)


@pytest.mark.parametrize(
    ("hc_mm", "two_sd_weeks"),
    [
        # Each tabulated range's first and last HC row (mm) and its +/-2 SD (weeks).
        (68.0, 1.19),
        (144.0, 1.19),
        (151.0, 1.48),
        (219.0, 1.48),
        (224.0, 2.06),
        (280.0, 2.06),
        (284.0, 2.98),
        (325.0, 2.98),
        (328.0, 3.20),
        (360.0, 3.20),
        # Between two tabulated rows: the next, wider variability.
        (147.0, 1.48),
        (282.0, 2.98),
        (326.5, 3.20),
    ],
)
def test_hadlock_ga_variability_by_hc(hc_mm: float, two_sd_weeks: float) -> None:
    assert hadlock_ga_2sd_weeks(hc_mm) == two_sd_weeks


def test_no_variability_outside_the_table() -> None:
    assert hadlock_ga_days(60.0) is not None and hadlock_ga_2sd_weeks(60.0) is None
    assert hadlock_ga_days(365.0) is not None and hadlock_ga_2sd_weeks(365.0) is None
    # Third trimester: weeks, not days.
    assert hadlock_ga_2sd_weeks(320.0) == pytest.approx(2.98)


def test_bpd_ofd_are_the_axes_outer_to_outer() -> None:
    b = biometry(Ellipse(0, 0, a=50.0, b=40.0, angle_deg=0))
    assert b.occipitofrontal_diameter_mm == 100.0 and b.biparietal_diameter_mm == 80.0
    assert b.head_circumference_mm == pytest.approx(ramanujan_perimeter(50, 40))
    assert b.cephalic_index == pytest.approx(80.0)


def test_cephalic_index_normal_range_is_hadlocks() -> None:
    """Hadlock et al. 1981 (AJR 137:83): mean 78.3; beyond 1 SD (<74, >83) the head's shape
    may mislead the BPD."""
    assert cephalic_index_normal(78.3) and cephalic_index_normal(74.0)
    assert cephalic_index_normal(83.0)
    assert not cephalic_index_normal(73.9) and not cephalic_index_normal(83.1)
    dolicho = biometry(Ellipse(0, 0, a=60.0, b=40.0, angle_deg=0))
    assert dolicho.cephalic_index == pytest.approx(66.7, abs=0.1)
    assert not cephalic_index_normal(dolicho.cephalic_index)


@pytest.mark.parametrize(
    ("spacing", "angle"), [((0.1, 0.1), 30.0), ((0.2, 0.1), 0.0), ((0.15, 0.15), 100.0)]
)
def test_fit_recovers_a_rasterised_ellipse_in_mm(
    spacing: tuple[float, float], angle: float
) -> None:
    truth = Ellipse(cx=40.0, cy=30.0, a=25.0, b=19.0, angle_deg=angle)
    shape = (int(70 / spacing[0]), int(90 / spacing[1]))
    mask = ellipse_mask(shape, (truth.cx, truth.cy, truth.a, truth.b, truth.angle_deg), spacing)
    fitted = fit_ellipse_mm(mask, spacing)
    assert fitted is not None
    assert fitted.circumference == pytest.approx(truth.circumference, abs=0.3)
    assert fitted.a == pytest.approx(truth.a, abs=0.15) and fitted.b == pytest.approx(
        truth.b, abs=0.15
    )


def test_fit_of_nothing_is_none() -> None:
    assert fit_ellipse_mm(np.zeros((20, 20), bool), (1.0, 1.0)) is None
