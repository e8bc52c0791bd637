"""Each run of a job as its own row (``JobAttempt``): opened when the job starts running,
closed with the state it leaves running for and that attempt's error. ``db.jobstate.transition``
calls these, so every path (worker, recovery, sweeper) keeps the history."""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from db.models import Job, JobAttempt, JobState, utcnow

#: The outcome of an attempt that ended with the job queued again (a retryable failure or a
#: lost run given back), and of one whose worker died while another run took over.
REQUEUED = "requeued"
LOST = "lost"


def current_attempt(session: Session, job_id: int) -> JobAttempt | None:
    """The job's latest attempt, open or not."""
    return session.scalars(
        select(JobAttempt)
        .where(JobAttempt.job_id == job_id)
        .order_by(JobAttempt.number.desc())
        .limit(1)
    ).first()


def _close(attempt: JobAttempt, outcome: str, error: str | None) -> None:
    attempt.finished_at = utcnow()
    attempt.outcome = outcome
    attempt.error = error


def on_transition(job: Job, old: JobState, new: JobState, error: str | None) -> None:
    """Keep the job's attempts in step with a transition; a no-op for a job in no session
    (a bare object in a unit test)."""
    session = object_session(job)
    if session is None or job.id is None:
        return
    if old is JobState.RUNNING:
        attempt = current_attempt(session, job.id)
        if attempt is not None and attempt.finished_at is None:
            if new is JobState.RUNNING:
                _close(attempt, LOST, "its worker was lost; the job was run again")
            else:
                _close(attempt, REQUEUED if new is JobState.QUEUED else new.value, error)
    if new is JobState.RUNNING:
        last = session.scalar(
            select(func.max(JobAttempt.number)).where(JobAttempt.job_id == job.id)
        )
        session.add(
            JobAttempt(
                job_id=job.id, number=(last or 0) + 1, started_at=utcnow(), worker=job.worker
            )
        )


def record_timings(session: Session, job_id: int, timings: dict[str, float]) -> int | None:
    """Store a run's stage timings on its attempt; the attempt's number (None: no attempt)."""
    attempt = current_attempt(session, job_id)
    if attempt is None:
        return None
    attempt.timings = json.dumps({k: round(v, 3) for k, v in timings.items()}, sort_keys=True)
    return attempt.number
