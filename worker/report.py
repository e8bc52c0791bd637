"""A plain-text results table (study, series, job, measurements, outputs) from the DB."""

from __future__ import annotations

from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Job, Result, Series


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
                outputs: list[str] = []
                if job is not None and job.results:
                    result = job.results[-1]
                    measures = ", ".join(f"{m.key}={m.value:.1f}" for m in result.measurements)
                    outputs = [o.path for o in result.outputs]
                elif job is not None and job.error:
                    measures = f"error: {job.error}"
                print(
                    f"…{series.series_instance_uid[-21:]:<21} {series.modality:<4} "
                    f"{len(series.instances):>4} {job.model_name if job else '-':<20} "
                    f"{job.state.value if job else series.status.value:<11} "
                    f"{job.attempts if job else 0:>3}  {measures}",
                    file=out,
                )
                for path in outputs:
                    print(f"{'':<22} SEG: {path}", file=out)
