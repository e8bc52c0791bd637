"""HC, BPD and OFD against the INTERGROWTH-21st fetal growth standards: z-score and centile
for a gestational age known by dates.

Each measure is normal at a given GA with mean mu(GA) and SD sigma(GA), GA in exact weeks
(14-40). The fractional polynomials are those of Papageorghiou AT, Ohuma EO, Altman DG et al.
*International standards for fetal growth based on serial ultrasound measurements: the Fetal
Growth Longitudinal Study of the INTERGROWTH-21st Project.* Lancet 2014;384(9946):869-79
(doi:10.1016/S0140-6736(14)61490-2), as implemented in the LSHTM ``gigs`` R package
(``R/ig_fet.R``). tests/unit/worker/models/fetal_head/test_growth.py checks them against the
standard's published z-score tables (INTERGROWTH-21st fetal growth PDFs), to their 0.1 mm.

Only the HC's standing is reported (``serve.py``): an ellipse on the outer border of the
skull, as ISUOG and our model measure it. BPD and OFD depend on where the calipers sit
(outer-to-outer here) and we have not yet checked the standard's protocol against ours, so
their equations are here, tested, but not used for a result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from pydicom import Dataset

if TYPE_CHECKING:
    from worker.export.outputs import MeasurementValue
    from worker.ops.dating import Dating

STANDARD = "INTERGROWTH-21st (Papageorghiou et al., Lancet 2014)"
GA_RANGE_WEEKS = (14.0, 40.0)


def _hc_mu(ga: float) -> float:
    return -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * math.log(ga)


def _hc_sigma(ga: float) -> float:
    log = math.log(ga)
    return 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * log + 0.000976253 * ga**3 * log**2


def _bpd_mu(ga: float) -> float:
    return 5.60878 + 0.158369 * ga**2 - 0.00256379 * ga**3


def _bpd_sigma(ga: float) -> float:
    log = math.log(ga)
    return math.exp(
        0.101242 + 0.00150557 * ga**3 - 0.000771535 * ga**3 * log + 0.0000999638 * ga**3 * log**2
    )


def _ofd_mu(ga: float) -> float:
    return -12.4097 + 0.626342 * ga**2 - 0.148075 * ga**2 * math.log(ga)


def _ofd_sigma(ga: float) -> float:
    log = math.log(ga)
    return math.exp(
        -0.880034 + 0.0631165 * ga**2 - 0.0317136 * ga**2 * log + 0.00408302 * ga**2 * log**2
    )


#: measure -> (mean, SD) in mm as functions of GA in exact weeks.
EQUATIONS: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "hc": (_hc_mu, _hc_sigma),
    "bpd": (_bpd_mu, _bpd_sigma),
    "ofd": (_ofd_mu, _ofd_sigma),
}


def in_range(ga_weeks: float) -> bool:
    lo, hi = GA_RANGE_WEEKS
    return lo <= ga_weeks <= hi


def value_at(measure: str, ga_weeks: float, z: float = 0.0) -> float:
    """The measure (mm) at z-score ``z`` for GA ``ga_weeks``: z=0 the median."""
    mu, sigma = EQUATIONS[measure]
    return mu(ga_weeks) + z * sigma(ga_weeks)


@dataclass(frozen=True)
class Standing:
    """Where one measurement stands for its GA."""

    z: float
    centile: float  # 0-100


def standing(measure: str, value_mm: float, ga_weeks: float) -> Standing | None:
    """The z-score and centile of ``value_mm`` at ``ga_weeks``; None outside 14-40 weeks."""
    if not in_range(ga_weeks):
        return None
    mu, sigma = EQUATIONS[measure]
    z = (value_mm - mu(ga_weeks)) / sigma(ga_weeks)
    return Standing(z, 50.0 * (1.0 + math.erf(z / math.sqrt(2.0))))


def ga_by_dates_days(lmp: str | None, on: str | None) -> float | None:
    """Gestational age in days on ``on`` from the last menstrual period ``lmp`` (both DICOM
    DA, YYYYMMDD); None when either is missing or unreadable, or the span is not a
    pregnancy's (0-45 weeks)."""
    if not lmp or not on:
        return None
    try:
        start = date(int(lmp[:4]), int(lmp[4:6]), int(lmp[6:8]))
        end = date(int(on[:4]), int(on[4:6]), int(on[6:8]))
    except ValueError:
        return None
    days = (end - start).days
    return float(days) if 0 <= days <= 45 * 7 else None


def by_dates(ds: Dataset, entered: Dating | None) -> Dating | None:
    """The GA by dates a result's growth standing uses (worker.ops.dating's rule): the one a
    reviewer entered for the study (``LoadedSeries.entered_ga``) when there is one, else the
    file's Last Menstrual Date to its study date; None without either."""
    from worker.ops.dating import Dating

    if entered is not None:
        return entered
    on = ds.get("StudyDate") or ds.get("ContentDate")
    days = ga_by_dates_days(str(ds.get("LastMenstrualDate") or ""), str(on or ""))
    return Dating(days, "dicom") if days is not None else None


def by_dates_report(dating: Dating | None) -> dict[str, object] | None:
    """report.json's account of the GA by dates: days, ``entered`` or ``dicom``, and in words
    (who entered it and when, or the DICOM LMP)."""
    if dating is None:
        return None
    return {"days": dating.days, "source": dating.source, "described": dating.describe()}


def by_dates_measurement(dating: Dating) -> MeasurementValue:
    """The GA by dates as a measurement (days; in the SR LOINC "Gestational Age by LMP"),
    its label naming where it comes from. The fetal head and brain both report it."""
    from worker.export.outputs import GA_BY_LMP, MeasurementValue

    label = (
        "Gestational age by dates (entered)"
        if dating.source == "entered"
        else "Gestational age by dates (LMP)"
    )
    return MeasurementValue("gestational_age_by_dates_days", label, dating.days, "d", GA_BY_LMP)
