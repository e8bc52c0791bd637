"""The INTERGROWTH-21st fetal growth equations (Papageorghiou et al., Lancet 2014) against
the standard's published z-score tables, and the HC's standing for a GA known by dates.

The rows below are from the INTERGROWTH-21st fetal growth z-score tables (HC, BPD, OFD in mm
at -3, -2, -1, 0, +1, +2, +3 SD by exact week), as published by the project in PDF and
transcribed to CSV in github.com/Yannngn/intergrowth-fetal-growth-csv (CC BY 4.0).
"""

from __future__ import annotations

import pytest
from pydicom import Dataset

from worker.models.fetal_head.growth import ga_by_dates_days, standing, value_at
from worker.models.fetal_head.serve import growth_measurements as _growth

Z = (-3, -2, -1, 0, 1, 2, 3)
PUBLISHED: dict[str, dict[int, tuple[float, ...]]] = {
    "hc": {
        14: (81.1, 86.7, 92.3, 97.9, 103.5, 109.0, 114.6),
        18: (127.2, 134.1, 141.0, 147.9, 154.8, 161.7, 168.6),
        20: (150.2, 157.6, 165.0, 172.5, 179.9, 187.4, 194.8),
        24: (194.2, 202.5, 210.8, 219.1, 227.4, 235.7, 244.0),
        28: (233.5, 242.5, 251.4, 260.4, 269.3, 278.2, 287.2),
        32: (265.5, 275.1, 284.7, 294.4, 304.0, 313.6, 323.2),
        36: (287.1, 297.9, 308.6, 319.4, 330.2, 340.9, 351.7),
        40: (295.2, 308.1, 321.0, 333.9, 346.9, 359.8, 372.7),
    },
    "bpd": {
        14: (24.4, 26.1, 27.9, 29.6, 31.4, 33.1, 34.8),
        20: (41.5, 43.8, 46.1, 48.4, 50.7, 53.0, 55.3),
        28: (64.6, 67.6, 70.5, 73.5, 76.4, 79.4, 82.3),
        34: (77.9, 81.3, 84.6, 87.9, 91.2, 94.5, 97.9),
        40: (83.1, 87.1, 91.0, 94.9, 98.8, 102.7, 106.7),
    },
    "ofd": {
        14: (28.0, 29.9, 31.8, 33.8, 35.7, 37.6, 39.6),
        20: (52.4, 55.1, 57.9, 60.7, 63.5, 66.2, 69.0),
        30: (86.4, 90.3, 94.1, 98.0, 101.9, 105.8, 109.7),
        40: (97.2, 103.4, 109.6, 115.8, 122.0, 128.2, 134.4),
    },
}


@pytest.mark.parametrize("measure", sorted(PUBLISHED))
def test_the_equations_give_the_published_tables(measure: str) -> None:
    for week, row in PUBLISHED[measure].items():
        computed = [value_at(measure, float(week), z) for z in Z]
        # The tables are printed to 0.1 mm (and built from rounded parts: up to 0.07 off the
        # exact curve): equal to within one printed digit.
        assert computed == pytest.approx(row, abs=0.1), (measure, week)


def test_a_standing_is_a_z_score_and_its_centile() -> None:
    median = standing("hc", 172.5, 20.0)
    assert median is not None and median.z == pytest.approx(0.0, abs=0.01)
    assert median.centile == pytest.approx(50.0, abs=0.5)
    low = standing("hc", 157.6, 20.0)  # the -2 SD value of the table
    assert low is not None and low.z == pytest.approx(-2.0, abs=0.02)
    assert low.centile == pytest.approx(2.28, abs=0.1)
    assert standing("hc", 100.0, 13.9) is None and standing("hc", 340.0, 40.1) is None


def test_ga_by_dates() -> None:
    assert ga_by_dates_days("20260101", "20260611") == 161.0  # 23w0d
    assert ga_by_dates_days(None, "20260611") is None
    assert ga_by_dates_days("2026xx01", "20260611") is None
    assert ga_by_dates_days("20260701", "20260611") is None, "an LMP after the scan"


def test_the_hc_centile_needs_the_dates() -> None:
    ds = Dataset()
    ds.StudyDate = "20260611"
    assert _growth(ds, 219.1) == [], "no LMP, no GA by dates, no centile"
    ds.LastMenstrualDate = "20251225"  # 24w0d on the study date
    found = {m.key: m for m in _growth(ds, 219.1)}
    assert found["gestational_age_by_dates_days"].value == 168.0
    assert found["head_circumference_z"].value == pytest.approx(0.0, abs=0.01)
    assert found["head_circumference_centile"].value == pytest.approx(50.0, abs=0.5)
    centile = found["head_circumference_centile"]  # in the SR: tests/.../test_sr_growth.py
    assert centile.statistic_of == "head_circumference_mm" and centile.concept is not None


def test_an_entered_ga_by_dates_wins_over_the_dicom_lmp() -> None:
    from worker.ops.dating import Dating

    ds = Dataset()
    ds.StudyDate, ds.LastMenstrualDate = "20260611", "20251225"  # 24w0d by the DICOM LMP
    found = {m.key: m for m in _growth(ds, 219.1, Dating(175.0, "entered", "rita"))}
    assert found["gestational_age_by_dates_days"].value == 175.0  # 25w0d, entered
    assert found["gestational_age_by_dates_days"].label == "Gestational age by dates (entered)"
    at_25 = standing("hc", 219.1, 25.0)
    assert at_25 is not None and found["head_circumference_z"].value == pytest.approx(at_25.z)
    population = found["head_circumference_z"].population
    assert population is not None and "by dates (entered), 25.0 weeks" in population.description
