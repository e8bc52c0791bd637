"""A restarted worker hands back its jobs; outcomes wait out a database outage."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from db.retry import with_db_retry
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job, set_job
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job
from worker.runtime.recovery import requeue_orphans


def test_a_restarted_node_hands_back_only_its_own_running_jobs(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    mine = queue_test_job(
        session_factory, chest_series(tmp_path / "a", 0, slices=2), max_attempts=2
    )
    other = queue_test_job(session_factory, chest_series(tmp_path / "b", 1, slices=2))
    set_job(session_factory, mine, state=JobState.RUNNING, attempts=1, worker="medseg@a")
    set_job(session_factory, other, state=JobState.RUNNING, attempts=1, worker="medseg@b")

    assert requeue_orphans(session_factory, "medseg@a") == [mine]
    with session_factory() as session:
        job = session.get_one(Job, mine)
        assert job.state is JobState.QUEUED and job.enqueued_at is None
        assert "medseg@a restarted" in (job.error or "")
        assert session.get_one(Job, other).state is JobState.RUNNING

    set_job(session_factory, mine, state=JobState.RUNNING, attempts=2, worker="medseg@a")
    requeue_orphans(session_factory, "medseg@a")
    with session_factory() as session:
        assert session.get_one(Job, mine).state is JobState.QUARANTINED  # attempts used up


def test_the_claiming_node_is_recorded(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path, 0, slices=4))
    state = execute_job(
        session_factory, ModelCache("cpu"), tmp_path / "results", job_id, worker="medseg@x"
    )
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        assert session.get_one(Job, job_id).worker == "medseg@x"


def _db_error(kind: type[Exception]) -> Exception:
    return kind("SELECT 1", {}, Exception("server closed the connection"))  # type: ignore[call-arg]


def test_transient_errors_are_retried_until_the_database_is_back() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _db_error(OperationalError)
        return "recorded"

    assert with_db_retry(flaky, what="test", first_wait_s=0.01) == "recorded"
    assert len(calls) == 3


def test_programming_errors_and_long_outages_are_raised() -> None:
    def broken() -> None:
        raise _db_error(ProgrammingError)

    with pytest.raises(ProgrammingError):
        with_db_retry(broken, what="test", first_wait_s=0.01)

    def down() -> None:
        raise _db_error(OperationalError)

    with pytest.raises(OperationalError):
        with_db_retry(down, what="test", total_s=0.05, first_wait_s=0.01)
