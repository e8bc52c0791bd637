"""A reviewer's ellipse: parsed, drawn, and measured as the model measures (HC by Ramanujan,
BPD and OFD its axes, GA by Hadlock)."""

from __future__ import annotations

import math

import pytest
from pydicom import Dataset

from worker.corrections.ellipse import EllipseError, corrected_head, parse
from worker.models.fetal_head.biometry import fit_ellipse_mm, hadlock_ga_days, ramanujan_perimeter


def test_parse_takes_any_order_and_makes_a_the_longer_axis() -> None:
    ellipse = parse("angle=10, a=20, b=30, cy=40.5, cx=50")
    assert (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b) == (50, 40.5, 30, 20)
    assert ellipse.angle_deg == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("cx=1,cy=2,a=3,b=4", "missing angle"),
        ("cx=1,cy=2,a=3,b=x,angle=0", "not a number"),
        ("cx=1,cy=2,a=-3,b=4,angle=0", "positive"),
        ("cx=1,cy=2,a=3,b=4,angle=0,z=1", "give cx"),
        ("cx=1,cy=2,a=nan,b=4,angle=0", "finite"),
    ],
)
def test_parse_refuses_what_is_not_an_ellipse(text: str, why: str) -> None:
    with pytest.raises(EllipseError, match=why):
        parse(text)


def test_the_drawn_ellipse_fits_back_to_itself_in_mm() -> None:
    """Drawn on anisotropic pixels and fitted the model's way, the ellipse comes back to a
    fraction of a pixel: the prefilled form and the corrected SEG agree."""
    spacing = (0.2, 0.25)
    drawn = parse("cx=40,cy=30,a=22,b=16,angle=30")
    segment, _, _ = corrected_head(
        drawn, (300, 320), spacing, calibrated=True, source=Dataset(), frame=0
    )
    back = fit_ellipse_mm(segment.mask[0], spacing)
    assert back is not None
    assert (back.cx, back.cy) == pytest.approx((drawn.cx, drawn.cy), abs=0.1)
    assert (back.a, back.b) == pytest.approx((drawn.a, drawn.b), abs=0.3)
    assert back.angle_deg == pytest.approx(drawn.angle_deg, abs=1.0)


def test_measurements_are_recomputed_from_the_ellipse() -> None:
    ellipse = parse("cx=40,cy=30,a=30,b=25,angle=0")
    _, measurements, warnings = corrected_head(
        ellipse, (300, 320), (0.25, 0.25), calibrated=True, source=Dataset(), frame=2
    )
    values = {m.key: m.value for m in measurements}
    hc = ramanujan_perimeter(30, 25)
    assert values["head_circumference_mm"] == pytest.approx(hc)
    assert math.isclose(hc, 173.145, abs_tol=0.001)  # pi(a+b)(1+3h/(10+sqrt(4-3h))), h=(1/11)^2
    assert values["biparietal_diameter_mm"] == 50 and values["occipitofrontal_diameter_mm"] == 60
    assert values["cephalic_index"] == pytest.approx(100 * 50 / 60)
    assert values["gestational_age_days"] == pytest.approx(hadlock_ga_days(hc))
    assert values["measured_frame"] == 3
    assert warnings == []


def test_uncalibrated_sizes_stay_in_pixels_without_ga() -> None:
    _, measurements, warnings = corrected_head(
        parse("cx=40,cy=30,a=30,b=25,angle=0"),
        (100, 100),
        (1.0, 1.0),
        calibrated=False,
        source=Dataset(),
        frame=0,
    )
    keys = {m.key for m in measurements}
    assert "head_circumference_px" in keys and "gestational_age_days" not in keys
    assert any("no calibration" in w for w in warnings)


def test_an_ellipse_off_the_image_is_refused() -> None:
    with pytest.raises(EllipseError, match="outside the image"):
        corrected_head(
            parse("cx=-500,cy=-500,a=10,b=5,angle=0"),
            (100, 100),
            (1.0, 1.0),
            calibrated=False,
            source=Dataset(),
            frame=0,
        )
