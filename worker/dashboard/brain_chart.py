"""The fetal brain volume on its reference chart: the intracranial volume's mean and +/-2 SD
per completed week (Ren et al. 2022, worker.models.fetal_brain.growth) with the measured
volume at its GA by dates, as PNG for the study page or PDF for a report.

Nothing is drawn without a brain volume and a GA by dates; a volume the quality gate flagged
has no z-score, and the chart says the point is unvalidated; nor has a volume whose mask is
not the intracranial volume (its label, worker.models.fetal_brain.convention).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from worker.dashboard.growth_standing import VOLUME_KEY, charted_job, volume_ranked
from worker.dashboard.plotting import new_figure, to_bytes
from worker.models.fetal_brain.growth import ICV_ML, REFERENCE, standing
from worker.ops.dating import effective

GA_KEY = "gestational_age_by_dates_days"


@dataclass(frozen=True)
class BrainPoint:
    volume_ml: float
    ga_days: float
    flagged: bool  # the quality gate's reasons are on the result
    source: str = ""  # where the GA by dates comes from (worker.ops.dating)
    ranked: bool = True  # the volume is the intracranial one (growth_standing.volume_ranked)


def job_point(session_factory: sessionmaker[Session], job_id: int) -> BrainPoint | None:
    """The brain volume of the job's latest result and its GA by dates (an entered one wins
    over the DICOM LMP's, worker.ops.dating); None without either."""
    with session_factory() as session:
        job = charted_job(session, job_id)
        if job is None:
            return None
        result = job.results[-1]
        values = {m.key: m.value for m in result.measurements}
        dating = effective(job.series.study, values.get(GA_KEY))
        flagged = bool(result.review)
        ranked = volume_ranked(result)
    if VOLUME_KEY not in values or dating is None:
        return None
    return BrainPoint(values[VOLUME_KEY], dating.days, flagged, dating.describe(), ranked)


def brain_chart(point: BrainPoint, fmt: str = "png") -> bytes:
    """The chart as ``fmt`` ("png" or "pdf") bytes."""
    weeks = sorted(ICV_ML)
    # A completed week's row covers its 7 days: drawn at the week's middle.
    middle = [w + 0.5 for w in weeks]
    means = [ICV_ML[w][0] for w in weeks]
    sds = [ICV_ML[w][1] for w in weeks]
    figure = new_figure()
    axes = figure.add_subplot()
    axes.fill_between(
        middle,
        [m - 2 * s for m, s in zip(means, sds, strict=True)],
        [m + 2 * s for m, s in zip(means, sds, strict=True)],
        color="0.85",
        label="reference mean ± 2 SD",
    )
    axes.plot(middle, means, "o-", color="0.3", markersize=3, linewidth=1.2, label="mean")
    ga_weeks = point.ga_days / 7.0
    days = int(point.ga_days)
    label = f"brain {point.volume_ml:.0f} mL at {days // 7}w{days % 7}d"
    where = None
    if point.flagged:
        label += " (flagged for review: not validated)"
    elif not point.ranked:
        label += " (not the intracranial volume: not ranked)"
    else:
        where = standing(point.volume_ml, point.ga_days)
    if where is not None:
        label += f" (z {where.z:+.1f})"
    axes.plot(
        [ga_weeks],
        [point.volume_ml],
        "o" if not point.flagged else "x",
        color="#d00000",
        markersize=8,
        label=label,
    )
    axes.set_xlim(min(weeks[0], ga_weeks) - 1, max(weeks[-1] + 1, ga_weeks) + 1)
    source = f"; {point.source}" if point.source else ""
    axes.set_xlabel(f"gestational age by dates (weeks){source}")
    axes.set_ylabel("intracranial volume (mL)")
    axes.set_title(f"Fetal intracranial volume\n{REFERENCE}", fontsize=8)
    axes.grid(True, color="0.9")
    axes.legend(loc="upper left", fontsize=8)
    return to_bytes(figure, fmt)
