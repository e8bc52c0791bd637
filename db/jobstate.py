"""The job state machine: the only place that decides which transitions are legal."""

from __future__ import annotations

from db.attempts import on_transition
from db.models import Job, JobState, utcnow

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(
        {JobState.RUNNING, JobState.FAILED, JobState.QUARANTINED, JobState.CANCELLED}
    ),
    # RUNNING -> RUNNING: a worker died mid-job and the broker redelivered it.
    JobState.RUNNING: frozenset(
        {
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.SUCCEEDED,
            JobState.NEEDS_REVIEW,
            JobState.FAILED,
            JobState.SKIPPED,
            JobState.QUARANTINED,
        }
    ),
    JobState.SUCCEEDED: frozenset({JobState.QUEUED}),
    JobState.NEEDS_REVIEW: frozenset({JobState.QUEUED}),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.SKIPPED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.QUARANTINED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}

TERMINAL = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.NEEDS_REVIEW,
        JobState.FAILED,
        JobState.SKIPPED,
        JobState.QUARANTINED,
        JobState.CANCELLED,
    }
)
#: States in which the model ran and its outputs exist.
FINISHED_WITH_RESULT = frozenset({JobState.SUCCEEDED, JobState.NEEDS_REVIEW})


class InvalidTransitionError(ValueError):
    """A job was asked to move to a state it cannot reach from where it is."""


def transition(job: Job, new_state: JobState, *, error: str | None = None) -> None:
    """Move ``job`` to ``new_state``, stamping timings and counting attempts."""
    if new_state not in _ALLOWED[job.state]:
        raise InvalidTransitionError(f"job {job.id}: {job.state.value} -> {new_state.value}")
    on_transition(job, job.state, new_state, error)
    now = utcnow()
    if new_state is JobState.RUNNING:
        job.attempts += 1
        job.started_at = now
        job.finished_at = None
    elif new_state is JobState.QUEUED:
        job.enqueued_at = None
        job.queued_at = now
        job.finished_at = None
    else:
        job.finished_at = now
    job.error = error
    job.state = new_state


def give_back(job: Job, reason: str) -> None:
    """A RUNNING job whose run was lost: back to QUEUED for the outbox, or QUARANTINED when
    its attempts are used up; the reason is kept either way."""
    if job.attempts >= job.max_attempts:
        transition(job, JobState.QUARANTINED, error=reason)
    else:
        transition(job, JobState.QUEUED, error=reason)
