"""A plain-text results table (study, series, job, measurements, outputs) from the DB."""

from __future__ import annotations

from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Job, Result, Series, Study
from worker.core.card import describe_validation, not_for_clinical_use
from worker.core.clinical_format import display_key, format_measurement
from worker.ops.studies import not_processed_reason


def describe_decision(result: Result) -> str:
    """A reviewer's decision as one line: ``accepted by NAME at TIME: NOTE``."""
    if not result.review_decision:
        return "undecided"
    when = result.reviewed_at.isoformat(timespec="seconds") if result.reviewed_at else "-"
    note = f": {result.review_note}" if result.review_note else ""
    return f"{result.review_decision} by {result.reviewed_by or '-'} at {when}{note}"


def print_results(session_factory: sessionmaker[Session], out: TextIO) -> None:
    with session_factory() as session:
        series_rows = session.scalars(
            select(Series)
            .options(
                selectinload(Series.study),
                selectinload(Series.instances),
                selectinload(Series.jobs)
                .selectinload(Job.results)
                .selectinload(Result.measurements),
                selectinload(Series.jobs).selectinload(Job.results).selectinload(Result.outputs),
            )
            .order_by(Series.id)
        ).all()
        header = (
            f"{'series':<22} {'mod':<4} {'n':>4} {'model':<20} {'state':<11} {'try':>3}"
            "  measurements"
        )
        print(header, file=out)
        print("-" * len(header), file=out)
        for series in series_rows:
            jobs: list[Job | None] = list(series.jobs) or [None]
            for job in jobs:
                measures = ""
                outputs: list[tuple[str, str]] = []
                if job is not None and job.results:
                    result = job.results[-1]
                    measures = ", ".join(
                        f"{display_key(m.key)}={format_measurement(m.value, m.unit)}"
                        for m in result.measurements
                    )
                    if not_for_clinical_use(result.validation):
                        measures = f"[{result.validation}: NOT FOR CLINICAL USE] {measures}"
                    outputs = [(o.kind, o.path) for o in result.outputs]
                elif job is not None and job.error:
                    measures = f"error: {job.error}"
                elif job is None and (why := not_processed_reason(series)) is not None:
                    measures = f"not processed: {why}"
                print(
                    f"…{series.series_instance_uid[-21:]:<21} {series.modality:<4} "
                    f"{len(series.instances):>4} {job.model_name if job else '-':<20} "
                    f"{job.state.value if job else series.status.value:<11} "
                    f"{job.attempts if job else 0:>3}  {measures}",
                    file=out,
                )
                for kind, path in outputs:
                    print(f"{'':<22} {kind.upper() + ':':<5} {path}", file=out)


def load_study(
    session: Session, *, uid: str | None = None, study_id: int | None = None
) -> Study | None:
    """One study (by UID or by our ID) with its series, instances, jobs and results loaded."""
    query = select(Study).options(
        selectinload(Study.series).selectinload(Series.instances),
        selectinload(Study.series)
        .selectinload(Series.jobs)
        .selectinload(Job.results)
        .options(
            selectinload(Result.measurements),
            selectinload(Result.outputs),
            selectinload(Result.deliveries),
        ),
    )
    if uid is not None:
        query = query.where(Study.study_instance_uid == uid)
    elif study_id is not None:
        query = query.where(Study.id == study_id)
    else:
        raise ValueError("give uid or study_id")
    return session.scalars(query).one_or_none()


def print_study(session_factory: sessionmaker[Session], study_key: str | int, out: TextIO) -> bool:
    """Everything about one study (its UID, or our ID as an int): series, jobs, measurements,
    outputs, deliveries. False when there is no such study."""
    from db.models import Delivery

    with session_factory() as session:
        study = (
            load_study(session, study_id=study_key)
            if isinstance(study_key, int)
            else load_study(session, uid=study_key)
        )
        if study is None:
            return False
        print(
            f"study {study.study_instance_uid}  date {study.study_date or '-'}  "
            f"patient ID {study.patient_id or '-'}  accession {study.accession_number or '-'}",
            file=out,
        )
        brain_volumes: list[float] = []
        for series in study.series:
            print(
                f"  series {series.series_instance_uid}  {series.modality}  "
                f"{len(series.instances)} instance(s)  {series.status.value}  "
                f"from {series.calling_ae or '-'}",
                file=out,
            )
            for job in series.jobs:
                print(
                    f"    job {job.id}  {job.model_name} {job.model_version}  {job.state.value}  "
                    f"attempts {job.attempts}/{job.max_attempts}"
                    + (f"  error: {job.error}" if job.error else ""),
                    file=out,
                )
                for result in job.results:
                    print(f"      weights sha256 {result.weights_sha256 or '-'}", file=out)
                    print(f"      validation: {describe_validation(result.validation)}", file=out)
                    if result.review_decision:
                        print(f"      {describe_decision(result)}", file=out)
                    for reason in (result.review or "").splitlines():
                        print(f"      needs review: {reason}", file=out)
                    for m in result.measurements:
                        shown = format_measurement(m.value, m.unit)
                        print(f"      {m.label:<36} {shown.value:>10} {shown.unit}", file=out)
                        if m.key == "brain_volume_ml" and job.state.value == "succeeded":
                            brain_volumes.append(m.value)
                    for o in result.outputs:
                        print(f"      {o.kind.upper():<4} {o.path}", file=out)
                    deliveries: list[Delivery] = list(result.deliveries)
                    for d in deliveries:
                        when = (
                            d.delivered_at.isoformat(timespec="seconds") if d.delivered_at else ""
                        )
                        print(
                            f"      delivery to {d.destination}: {d.state.value} after "
                            f"{d.attempts} attempt(s) {when}"
                            + (f" ({d.error})" if d.error and d.state.value != "sent" else "")
                            + (
                                f"  -> medseg deliver --retry {d.id}"
                                if d.state.value == "failed"
                                else ""
                            ),
                            file=out,
                        )
        if brain_volumes:
            mean = sum(brain_volumes) / len(brain_volumes)
            spread = max(brain_volumes) - min(brain_volumes)
            print(
                f"  study summary: fetal brain volume {mean:.1f} mL over {len(brain_volumes)} "
                f"stack(s) (range {spread:.1f} mL)",
                file=out,
            )
    return True
