"""Measurements as clinicians read them, for every place that shows one to a person.

The database and the SR keep the raw value and its UCUM unit (``d``, ``mm2``, ``{frame}``);
this module only turns them into text: gestational age in weeks and days (``37w5d``),
lengths in mm with one decimal, areas in cm², volumes in mL, counts and frame numbers as
integers, and no UCUM braces. Used by the dashboard, ``medseg show`` and ``medseg demo``'s
results table, so a number reads the same everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Shown:
    """One measurement ready to print: its value text and its unit text ("" for none)."""

    value: str
    unit: str

    def __str__(self) -> str:
        return f"{self.value} {self.unit}" if self.unit else self.value


def gestational_age(days: float) -> str:
    """Days as completed weeks and completed days, the way an obstetric report writes it:
    264.9 days is ``37w5d`` (day 265 is not complete yet)."""
    whole = math.floor(days + 1e-6)  # 1e-6: 146.9999999 from float arithmetic is day 147
    return f"{whole // 7}w{whole % 7}d"


def _centile(value: float) -> str:
    if value < 1.0:
        return "<1st"
    if value > 99.0:
        return ">99th"
    whole = round(value)
    suffix = "th" if 10 <= whole % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(whole % 10, "th")
    return f"{whole}{suffix}"


def _integer(value: float) -> str:
    return str(round(value))


def _one_decimal(value: float) -> str:
    return f"{value:.1f}"


def format_measurement(value: float, unit: str) -> Shown:
    """``value`` in UCUM ``unit`` (as the models store it) as a reader expects to see it."""
    if unit == "d":
        return Shown(gestational_age(value), "")
    if unit == "wk":  # weeks as a span, e.g. a GA's +/-2 SD: 3.0 wk
        return Shown(_one_decimal(value), "wk")
    if unit == "mm":
        return Shown(_one_decimal(value), "mm")
    if unit == "mm2":
        return Shown(_one_decimal(value / 100.0), "cm²")
    if unit == "cm2":
        return Shown(_one_decimal(value), "cm²")
    if unit in ("mL", "ml"):
        return Shown(_one_decimal(value), "mL")
    if unit == "{pixels}":  # a length on an uncalibrated image
        return Shown(_one_decimal(value), "px")
    if unit == "{pixels2}":  # an area on an uncalibrated image: pixels counted
        return Shown(_integer(value), "px²")
    if unit == "{z-score}":  # signed, as growth charts write it: +1.28
        return Shown(f"{value:+.2f}", "")
    if unit == "{centile}":  # as a chart reads: 12th, 3rd, <1st, >99th
        return Shown(_centile(value), "centile")
    if unit == "{index}":  # a ratio times 100, as the cephalic index is written: 78.3
        return Shown(_one_decimal(value), "")
    if unit in ("{frame}", "{findings}", "{count}", "1"):
        return Shown(_integer(value), "")
    if unit.startswith("{") and unit.endswith("}"):  # another UCUM annotation: a count
        return Shown(_integer(value), "")
    return Shown(f"{value:.4g}", unit)


#: Unit suffixes of our measurement keys (``gestational_age_days``, ``max_slice_area_mm2``):
#: dropped where the value is shown with its own unit, which may differ (days as 37w5d, mm²
#: as cm²), so a table never reads ``max_slice_area_mm2=32.4 cm²``.
_KEY_UNITS = ("_days", "_weeks", "_mm2", "_cm2", "_mm", "_ml")


def display_key(key: str) -> str:
    """A measurement key for a table beside its formatted value: without its unit suffix."""
    for suffix in _KEY_UNITS:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)]
    return key


def measurement_text(label: str, value: float, unit: str) -> str:
    """``Label: value unit`` on one line, e.g. ``Gestational age (Hadlock 1984 HC): 37w5d``."""
    return f"{label}: {format_measurement(value, unit)}"
