"""Jobs lost by a worker or the broker come back; duplicates of a running job are dropped."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow
from dicom_gateway.sweeper import sweep
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job, set_job
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job


def test_a_job_running_past_the_visibility_timeout_is_requeued_then_quarantined(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path, 0, slices=2), max_attempts=2)
    long_ago = utcnow() - timedelta(hours=3)
    set_job(session_factory, job_id, state=JobState.RUNNING, attempts=1, started_at=long_ago)
    assert sweep(session_factory, running_timeout_s=3600, requeue_after_s=3600) == ([job_id], [])
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.QUEUED and job.enqueued_at is None
        assert "worker lost" in (job.error or "")
    set_job(session_factory, job_id, state=JobState.RUNNING, attempts=2, started_at=long_ago)
    sweep(session_factory, running_timeout_s=3600, requeue_after_s=3600)
    with session_factory() as session:
        assert session.get_one(Job, job_id).state is JobState.QUARANTINED


def test_recent_running_jobs_are_left_alone(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path, 0, slices=2))
    set_job(session_factory, job_id, state=JobState.RUNNING, attempts=1, started_at=utcnow())
    assert sweep(session_factory, running_timeout_s=3600, requeue_after_s=3600) == ([], [])


def test_a_published_job_never_started_is_published_again(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    old = queue_test_job(session_factory, chest_series(tmp_path / "a", 0, slices=2))
    fresh = queue_test_job(session_factory, chest_series(tmp_path / "b", 1, slices=2))
    set_job(session_factory, old, enqueued_at=utcnow() - timedelta(hours=8))
    set_job(session_factory, fresh, enqueued_at=utcnow())
    assert sweep(session_factory, running_timeout_s=3600, requeue_after_s=6 * 3600) == ([], [old])
    with session_factory() as session:
        assert session.get_one(Job, old).enqueued_at is None
        assert session.get_one(Job, fresh).enqueued_at is not None


def test_a_duplicate_message_for_a_running_job_is_dropped(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path, 0, slices=4))
    set_job(session_factory, job_id, state=JobState.RUNNING, attempts=1, started_at=utcnow())
    models = ModelCache("cpu")
    assert (
        execute_job(session_factory, models, tmp_path / "r", job_id, running_window_s=600) is None
    )
    # Past the window it is a redelivery after a dead worker, and runs.
    set_job(session_factory, job_id, started_at=utcnow() - timedelta(hours=1))
    state = execute_job(session_factory, models, tmp_path / "r", job_id, running_window_s=600)
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        assert session.get_one(Job, job_id).attempts == 2


def test_a_job_whose_message_the_broker_lost_is_published_again(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from dicom_gateway.sweeper import republish_lost

    held_job = queue_test_job(session_factory, chest_series(tmp_path / "a", 0, slices=2))
    lost_job = queue_test_job(session_factory, chest_series(tmp_path / "b", 1, slices=2))
    young_job = queue_test_job(session_factory, chest_series(tmp_path / "c", 2, slices=2))
    a_while_ago = utcnow() - timedelta(minutes=5)
    set_job(session_factory, held_job, enqueued_at=a_while_ago, celery_task_id="t-held")
    set_job(session_factory, lost_job, enqueued_at=a_while_ago, celery_task_id="t-lost")
    set_job(session_factory, young_job, enqueued_at=utcnow(), celery_task_id="t-young")
    asked: list[int] = []

    def broker_holds() -> set[str]:
        asked.append(1)
        return {"t-held"}

    assert republish_lost(session_factory, broker_holds, lost_after_s=120) == [lost_job]
    assert len(asked) == 2  # asked twice before deciding
    with session_factory() as session:
        assert session.get_one(Job, lost_job).enqueued_at is None  # the outbox publishes it
        assert session.get_one(Job, held_job).enqueued_at is not None
        assert session.get_one(Job, young_job).enqueued_at is not None
    # Nothing old enough is missing: the broker is asked no more.
    assert republish_lost(session_factory, broker_holds, lost_after_s=120) == []
