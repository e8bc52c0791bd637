"""Measurements read as clinicians read them, the same in the dashboard and the CLI."""

from __future__ import annotations

import pytest

from worker.core.clinical_format import (
    Shown,
    format_measurement,
    gestational_age,
    measurement_text,
)


@pytest.mark.parametrize(
    ("days", "text"),
    [(264.29, "37w5d"), (264.9, "37w5d"), (140.0, "20w0d"), (146.9999999, "21w0d"), (6.4, "0w6d")],
)
def test_gestational_age_is_weeks_and_days(days: float, text: str) -> None:
    assert gestational_age(days) == text


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (264.29, "d", Shown("37w5d", "")),
        (181.04, "mm", Shown("181.0", "mm")),
        (47.96, "mm", Shown("48.0", "mm")),
        (1234.0, "mm2", Shown("12.3", "cm²")),
        (12.34, "cm2", Shown("12.3", "cm²")),
        (2543.26, "mL", Shown("2543.3", "mL")),
        (1.0, "{frame}", Shown("1", "")),
        (12.0, "{frame}", Shown("12", "")),
        (2.0, "{findings}", Shown("2", "")),
        (3.0, "{lesions}", Shown("3", "")),
        (101.26, "{pixels}", Shown("101.3", "px")),
        (52340.0, "{pixels2}", Shown("52340", "px²")),
        (78.34, "{index}", Shown("78.3", "")),
        (-1.2345, "{z-score}", Shown("-1.23", "")),
        (0.5, "{z-score}", Shown("+0.50", "")),
        (12.4, "{centile}", Shown("12th", "centile")),
        (2.6, "{centile}", Shown("3rd", "centile")),
        (11.2, "{centile}", Shown("11th", "centile")),
        (0.4, "{centile}", Shown("<1st", "centile")),
        (99.6, "{centile}", Shown(">99th", "centile")),
        (0.123456, "ms", Shown("0.1235", "ms")),
    ],
)
def test_units_as_a_reader_expects(value: float, unit: str, shown: Shown) -> None:
    assert format_measurement(value, unit) == shown
    assert "{" not in str(shown) and "mm2" not in str(shown)


def test_one_line_text() -> None:
    assert measurement_text("Gestational age (Hadlock 1984 HC)", 264.29, "d") == (
        "Gestational age (Hadlock 1984 HC): 37w5d"
    )
    assert measurement_text("Measured frame number", 1.0, "{frame}") == "Measured frame number: 1"
    assert measurement_text("Head circumference", 330.04, "mm") == "Head circumference: 330.0 mm"


def test_display_key_drops_the_unit_suffix_the_formatted_value_replaces() -> None:
    from worker.core.clinical_format import display_key

    assert display_key("gestational_age_days") == "gestational_age"
    assert display_key("max_slice_area_mm2") == "max_slice_area"
    assert display_key("lung_area_cm2") == "lung_area"
    assert display_key("head_circumference_mm") == "head_circumference"
    assert display_key("brain_volume_ml") == "brain_volume"
    assert display_key("measured_frame") == "measured_frame"
    assert display_key("_mm") == "_mm"  # nothing left: kept as it is
