"""The fetal head on its growth chart: the INTERGROWTH-21st HC centile curves (3rd, 10th,
50th, 90th, 97th) over 14-40 weeks with the measured HC at its GA by dates, drawn by
matplotlib (headless, Agg) as PNG for the study page or PDF for a report.

The curves come from worker.models.fetal_head.growth (the standard's equations, tested
against its published tables); nothing is drawn without a GA by dates and an HC in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session, sessionmaker

from worker.dashboard.growth_standing import charted_job
from worker.dashboard.plotting import new_figure, to_bytes
from worker.models.fetal_head.growth import GA_RANGE_WEEKS, STANDARD, standing, value_at
from worker.ops.dating import effective

CENTILES = (3, 10, 50, 90, 97)
HC_KEY = "head_circumference_mm"
GA_KEY = "gestational_age_by_dates_days"


@dataclass(frozen=True)
class ChartPoint:
    hc_mm: float
    ga_days: float
    source: str = ""  # where the GA by dates comes from (worker.ops.dating)


def centile_curves(
    measure: str = "hc", step: float = 0.25
) -> tuple[npt.NDArray[np.float64], dict[int, npt.NDArray[np.float64]]]:
    """GA in weeks and, per centile, the measure (mm) along it."""
    lo, hi = GA_RANGE_WEEKS
    weeks = np.arange(lo, hi + step / 2, step)
    curves = {
        c: np.array([value_at(measure, float(w), NormalDist().inv_cdf(c / 100)) for w in weeks])
        for c in CENTILES
    }
    return weeks, curves


def job_point(session_factory: sessionmaker[Session], job_id: int) -> ChartPoint | None:
    """The HC (mm) of the job's latest result and its GA by dates (an entered one wins over
    the DICOM LMP's, worker.ops.dating); None without either."""
    with session_factory() as session:
        job = charted_job(session, job_id)
        if job is None:
            return None
        values = {m.key: m.value for m in job.results[-1].measurements}
        dating = effective(job.series.study, values.get(GA_KEY))
    if HC_KEY not in values or dating is None:
        return None
    return ChartPoint(values[HC_KEY], dating.days, dating.describe())


def hc_chart(point: ChartPoint, fmt: str = "png") -> bytes:
    """The chart as ``fmt`` ("png" or "pdf") bytes."""
    weeks, curves = centile_curves()
    figure = new_figure()
    axes = figure.add_subplot()
    for centile, values in curves.items():
        style = "-" if centile == 50 else "--" if centile in (10, 90) else ":"
        axes.plot(weeks, values, style, color="0.3", linewidth=1.2)
        axes.annotate(
            f"{centile}th" if centile != 3 else "3rd",
            (weeks[-1], values[-1]),
            xytext=(3, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
        )
    ga_weeks = point.ga_days / 7.0
    where = standing("hc", point.hc_mm, ga_weeks)
    label = f"HC {point.hc_mm:.1f} mm at {int(point.ga_days) // 7}w{int(point.ga_days) % 7}d"
    if where is not None:
        label += f" (z {where.z:+.2f})"
    axes.plot([ga_weeks], [point.hc_mm], "o", color="#d00000", markersize=7, label=label)
    axes.set_xlim(GA_RANGE_WEEKS[0], GA_RANGE_WEEKS[1] + 1.5)
    source = f"; {point.source}" if point.source else ""
    axes.set_xlabel(f"gestational age by dates (weeks){source}")
    axes.set_ylabel("head circumference (mm)")
    axes.set_title(f"Head circumference: {STANDARD}", fontsize=9)
    axes.grid(True, color="0.9")
    axes.legend(loc="upper left", fontsize=8)
    return to_bytes(figure, fmt)
