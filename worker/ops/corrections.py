"""A reviewer's correction, recorded for the worker to apply (worker.corrections.apply), and
the corrections operators look at: applied ones with what they changed, and received SEGs no
result was found for, with the reason (kept, never lost)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Correction, CorrectionState, Job, JobState, Series
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import OperationError

#: The measurement that says a result is a fetal head's (an ellipse can correct it).
HEAD_KEYS = ("head_circumference_mm", "head_circumference_px")
CORRECTABLE = (JobState.SUCCEEDED, JobState.NEEDS_REVIEW)


def request_ellipse(
    session_factory: sessionmaker[Session],
    job_id: int,
    ellipse: dict[str, float],
    *,
    by: str,
    note: str | None = None,
    actor: Actor | None = None,
) -> int:
    """Record ``by``'s ellipse (cx, cy, a, b, angle in the model's units) for job
    ``job_id``'s fetal head result; the worker applies it. Returns the correction's ID."""
    if not by.strip():
        raise OperationError("say who corrects (--by NAME)")
    with (
        refusals(session_factory, actor, "correct", job_id=job_id),
        session_factory.begin() as session,
    ):
        job = session.get(Job, job_id)
        if job is None:
            raise OperationError(f"no job {job_id}")
        if job.state not in CORRECTABLE or not job.results:
            raise OperationError(f"job {job_id} is {job.state.value}: no result to correct")
        keys = {m.key for m in job.results[-1].measurements}
        if not keys & set(HEAD_KEYS):
            raise OperationError(
                f"job {job_id} is not a fetal head result: only an ellipse of one can be "
                "corrected here (send a corrected SEG for masks)"
            )
        row = Correction(
            kind="ellipse",
            by=by.strip()[:128],
            source=actor.source if actor else "cli",
            note=note or None,
            job_id=job_id,
            ellipse=json.dumps(ellipse),
        )
        session.add(row)
        session.flush()
        record(
            session,
            actor,
            "correct",
            job_id=job_id,
            detail=f"ellipse correction {row.id} recorded by {row.by}: "
            + ", ".join(f"{k}={v:g}" for k, v in ellipse.items()),
        )
        return row.id


@dataclass(frozen=True)
class CorrectionView:
    id: int
    kind: str
    state: str
    created_at: datetime
    by: str
    source: str
    job_id: int | None
    replaces_result_id: int | None
    result_id: int | None
    reason: str | None
    changes: dict[str, list[float | None]]
    study_id: int | None


def list_corrections(
    session_factory: sessionmaker[Session],
    *,
    state: str | None = None,
    study_id: int | None = None,
    limit: int = 200,
) -> list[CorrectionView]:
    """Corrections, newest first: all, those in ``state``, or those of one study (by the
    job's series or the received SEG's series)."""
    query = select(Correction).order_by(Correction.id.desc()).limit(limit)
    if state:
        query = query.where(Correction.state == CorrectionState(state))
    with session_factory() as session:
        if study_id is not None:
            series = select(Series.id).where(Series.study_id == study_id)
            jobs = select(Job.id).where(Job.series_id.in_(series))
            query = query.where(or_(Correction.series_id.in_(series), Correction.job_id.in_(jobs)))
        rows = session.scalars(query).all()
        studies = _studies(session, rows)
        return [
            CorrectionView(
                id=r.id,
                kind=r.kind,
                state=r.state.value,
                created_at=r.created_at,
                by=r.by,
                source=r.source,
                job_id=r.job_id,
                replaces_result_id=r.replaces_result_id,
                result_id=r.result_id,
                reason=r.reason,
                changes=json.loads(r.changes) if r.changes else {},
                study_id=studies.get(r.id),
            )
            for r in rows
        ]


def _studies(session: Session, rows: Sequence[Correction]) -> dict[int, int]:
    found: dict[int, int] = {}
    for r in rows:
        series_id = r.series_id
        if series_id is None and r.job_id is not None:
            series_id = session.scalar(select(Job.series_id).where(Job.id == r.job_id))
        if series_id is not None:
            study = session.scalar(select(Series.study_id).where(Series.id == series_id))
            if study is not None:
                found[r.id] = study
    return found
