from __future__ import annotations

import pytest

from db.jobstate import InvalidTransitionError, transition
from db.models import Job, JobState


def _job(state: JobState) -> Job:
    return Job(
        id=1, series_id=1, model_name="m", model_version="1", queue="cpu", state=state, attempts=0
    )


def test_happy_path_counts_attempts_and_stamps_times() -> None:
    job = _job(JobState.QUEUED)
    transition(job, JobState.RUNNING)
    assert job.attempts == 1 and job.started_at is not None and job.finished_at is None
    transition(job, JobState.SUCCEEDED)
    assert job.state is JobState.SUCCEEDED and job.finished_at is not None


def test_failure_keeps_the_reason() -> None:
    job = _job(JobState.RUNNING)
    transition(job, JobState.FAILED, error="InputError: no lungs")
    assert job.error == "InputError: no lungs"


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (JobState.QUEUED, JobState.SUCCEEDED),
        (JobState.SUCCEEDED, JobState.RUNNING),
        (JobState.FAILED, JobState.SUCCEEDED),
        (JobState.QUARANTINED, JobState.RUNNING),
    ],
)
def test_illegal_transitions_are_refused(start: JobState, target: JobState) -> None:
    with pytest.raises(InvalidTransitionError):
        transition(_job(start), target)


def test_requeue_clears_publication() -> None:
    job = _job(JobState.FAILED)
    transition(job, JobState.QUEUED)
    assert job.enqueued_at is None and job.state is JobState.QUEUED
