"""A result's growth standing at the study's GA by dates (worker.ops.dating's rule), computed
at page time from its stored measurements: the HC's INTERGROWTH-21st z-score and centile, the
fetal brain volume's z-score (Ren 2022). Used when a reviewer entered a GA by dates after the
worker ran, so that the z-scores it stored (from the DICOM LMP, or none) did not know it; a job
run after the entry stores the entered GA's standing itself (worker.runtime.jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, selectinload

from db.models import Job, Result, Series, Study
from worker.ops.dating import Dating, effective


def charted_job(session: Session, job_id: int) -> Job | None:
    """A job with its results' measurements and its study loaded (what a growth chart
    reads); None when it does not exist or has no result."""
    job = session.get(
        Job,
        job_id,
        options=[
            selectinload(Job.results).selectinload(Result.measurements),
            selectinload(Job.series).selectinload(Series.study),
        ],
    )
    return job if job is not None and job.results else None


HC_KEY = "head_circumference_mm"
VOLUME_KEY = "brain_volume_ml"
GA_KEY = "gestational_age_by_dates_days"


@dataclass(frozen=True)
class StandingRow:
    label: str
    value: float
    unit: str


@dataclass(frozen=True)
class GrowthStanding:
    dating: Dating
    rows: list[StandingRow]


def values_of(result: Result) -> dict[str, float]:
    return {m.key: m.value for m in result.measurements}


def volume_ranked(result: Result) -> bool:
    """Whether the result's brain volume is the intracranial one, by its stored label
    (worker.models.fetal_brain.convention), and so may be ranked in Ren 2022's reference."""
    from worker.models.fetal_brain.convention import ranked

    return any(m.key == VOLUME_KEY and ranked(m.label) for m in result.measurements)


def result_dating(study: Study | None, result: Result) -> Dating | None:
    """The GA by dates of ``result``'s growth standing: entered, else the DICOM LMP's."""
    return effective(study, values_of(result).get(GA_KEY))


def recomputed(study: Study | None, result: Result) -> GrowthStanding | None:
    """The standing at an entered GA by dates; None when none was entered or the worker
    already computed the stored measurements with it (their GA by dates is the entered one:
    the stored measurements are then the standing), or the result has no HC or brain
    volume."""
    from worker.models.fetal_brain.growth import standing as brain_standing
    from worker.models.fetal_head.growth import standing as hc_standing

    dating = result_dating(study, result)
    values = values_of(result)
    if dating is None or dating.source != "entered" or values.get(GA_KEY) == dating.days:
        return None
    if HC_KEY not in values and VOLUME_KEY not in values:
        return None
    rows = [StandingRow("Gestational age by dates", dating.days, "d")]
    if HC_KEY in values:
        hc = hc_standing("hc", values[HC_KEY], dating.days / 7.0)
        if hc is not None:
            rows += [
                StandingRow("HC z-score (INTERGROWTH-21st)", hc.z, "{z-score}"),
                StandingRow("HC centile (INTERGROWTH-21st)", hc.centile, "{centile}"),
            ]
    flagged = bool(result.review)
    if VOLUME_KEY in values and not flagged and volume_ranked(result):
        brain = brain_standing(values[VOLUME_KEY], dating.days)
        if brain is not None:
            rows.append(
                StandingRow(
                    f"Brain volume z-score (intracranial, Ren 2022, week {brain.week})",
                    brain.z,
                    "{z-score}",
                )
            )
    return GrowthStanding(dating, rows)
