"""Operators' actions and status: retry, cancel, list, queue depth (fakeredis), broker down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import fakeredis
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Result
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from worker.core.settings import Settings
from worker.ops.operations import OperationError, cancel, list_jobs, retry, status


def _job(session_factory: sessionmaker[Session], tmp_path: Path, name: str, state: JobState) -> int:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / name, len(name), slices=2))
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.state, job.attempts, job.error = (
            state,
            3,
            "boom" if state is not JobState.QUEUED else None,
        )
    return job_id


def test_retry_requeues_failed_and_quarantined_with_a_fresh_budget(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    failed = _job(session_factory, tmp_path, "a", JobState.FAILED)
    quarantined = _job(session_factory, tmp_path, "bb", JobState.QUARANTINED)
    done = _job(session_factory, tmp_path, "ccc", JobState.SUCCEEDED)
    assert sorted(retry(session_factory)) == [failed, quarantined]
    with session_factory() as session:
        job = session.get_one(Job, quarantined)
        assert job.state is JobState.QUEUED and job.attempts == 0 and job.enqueued_at is None
        assert session.get_one(Job, done).state is JobState.SUCCEEDED
    with pytest.raises(OperationError, match="succeeded"):
        retry(session_factory, [done])
    with pytest.raises(OperationError, match="no job"):
        retry(session_factory, [9999])


def test_cancel_a_queued_job_and_not_a_running_one(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    queued = _job(session_factory, tmp_path, "a", JobState.QUEUED)
    running = _job(session_factory, tmp_path, "bb", JobState.RUNNING)
    cancel(session_factory, queued)
    assert [j.id for j in list_jobs(session_factory, state=JobState.CANCELLED)] == [queued]
    with pytest.raises(OperationError, match="running"):
        cancel(session_factory, running)
    assert retry(session_factory, [queued]) == [queued]  # a cancelled job can be revived


def test_status_reads_queue_depth_and_survives_a_dead_broker(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    _job(session_factory, tmp_path, "a", JobState.QUEUED)
    _job(session_factory, tmp_path, "bb", JobState.FAILED)
    _job(session_factory, tmp_path, "ccc", JobState.SUCCEEDED)
    client = fakeredis.FakeRedis()
    client.rpush("gpu", b"m1", b"m2")
    s = status(session_factory, client, None)
    assert s.queue_depth == {"gpu": 2, "cpu": 0}
    assert s.by_state_day == {"queued": 1, "failed": 1, "succeeded": 1}
    assert s.failure_rate_day == pytest.approx(0.5)
    assert s.oldest_waiting_s is not None and s.oldest_waiting_s >= 0
    assert s.awaiting_review == 0
    flagged = _job(session_factory, tmp_path, "dddd", JobState.NEEDS_REVIEW)
    with session_factory.begin() as session:
        session.add(Result(job_id=flagged, model_name="m", model_version="1", review="gate"))
    assert status(session_factory, client, None).awaiting_review == 1
    with session_factory.begin() as session:
        session.scalars(select(Result)).one().review_decision = "accepted"
    assert status(session_factory, client, None).awaiting_review == 0

    class Down:
        def llen(self, name: str) -> int:
            raise ConnectionError("down")

    assert status(session_factory, Down(), None).queue_depth == {"gpu": None, "cpu": None}


def test_jobs_and_retry_from_the_command_line(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    failed = _job(session_factory, tmp_path, "a", JobState.FAILED)
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}

    def medseg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    listed = medseg("jobs", "--state", "failed", "--since", "1h")
    assert (
        listed.returncode == 0
        and re.search(rf"^ *{failed} +failed ", listed.stdout, re.M)
        and "boom" in listed.stdout
    )
    assert medseg("retry", str(failed)).stdout.strip() == f"queued again: {failed}"
    cancel(session_factory, failed)
    assert medseg("retry", "--failed").stdout.strip() == "queued again: nothing"
    with session_factory() as session:
        assert session.get_one(Job, failed).state is JobState.CANCELLED
    refused = medseg("cancel", "424242")
    assert refused.returncode == 1 and "no job 424242" in refused.stderr


def test_rerun_makes_new_jobs_only_where_the_version_changed(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from worker.ops.reruns import rerun

    old = _job(session_factory, tmp_path, "a", JobState.SUCCEEDED)  # model version 1.0.0
    with session_factory.begin() as session:
        session.get_one(Job, old).model_version = "0.9.0"  # ran on an older version
    created = rerun(session_factory, "lung-ct-threshold")
    assert len(created) == 1
    with session_factory() as session:
        new = session.get_one(Job, created[0])
        assert new.model_version == "1.0.0" and new.state is JobState.QUEUED and new.input_key
        assert session.get_one(Job, old).state is JobState.SUCCEEDED  # kept
    assert rerun(session_factory, "lung-ct-threshold") == []  # identical job queued
    assert len(rerun(session_factory, "lung-ct-threshold", force=True)) == 1
    with pytest.raises(OperationError, match="no model"):
        rerun(session_factory, "nope")


def test_retry_publishes_a_queued_job_again_keeping_its_attempts(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from datetime import timedelta

    from db.models import utcnow

    queued = _job(session_factory, tmp_path, "a", JobState.QUEUED)
    with session_factory.begin() as session:
        job = session.get_one(Job, queued)
        job.enqueued_at, job.attempts = utcnow() - timedelta(hours=1), 1
        job.not_before = utcnow() + timedelta(minutes=5)
    assert retry(session_factory, [queued]) == [queued]
    with session_factory() as session:
        job = session.get_one(Job, queued)
        assert job.state is JobState.QUEUED and job.enqueued_at is None
        assert job.not_before is None and job.attempts == 1
    assert retry(session_factory) == []  # `retry --failed` leaves queued jobs alone


def test_retry_all_never_touches_a_cancelled_job(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Issue 21 item 2: `retry --failed` and "Retry all" leave cancelled jobs cancelled."""
    from db.models import utcnow

    failed = _job(session_factory, tmp_path, "a", JobState.FAILED)
    cancelled = _job(session_factory, tmp_path, "bb", JobState.QUEUED)
    cancel(session_factory, cancelled)
    superseded = _job(session_factory, tmp_path, "ccc", JobState.CANCELLED)
    with session_factory.begin() as session:
        session.get_one(Job, superseded).superseded_at = utcnow()
    assert retry(session_factory) == [failed]
    with session_factory() as session:
        assert session.get_one(Job, cancelled).state is JobState.CANCELLED
        assert session.get_one(Job, superseded).state is JobState.CANCELLED
    with pytest.raises(OperationError, match="superseded"):
        retry(session_factory, [superseded])
    assert retry(session_factory, [cancelled]) == [cancelled]  # named: revived


def test_oldest_waiting_counts_from_the_last_queueing_not_from_creation(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A job made long ago and retried just now has waited only since its retry (issue 32
    item 4): ``queued_at``, set by every move into the queue, not ``created_at``."""
    from datetime import timedelta

    from db.models import utcnow

    old = _job(session_factory, tmp_path, "a", JobState.FAILED)
    with session_factory.begin() as session:
        job = session.get_one(Job, old)
        job.created_at = job.queued_at = utcnow() - timedelta(seconds=644)
    assert retry(session_factory, [old]) == [old]
    s = status(session_factory, fakeredis.FakeRedis(), None)
    assert s.oldest_waiting_s is not None and s.oldest_waiting_s < 60
    with session_factory.begin() as session:  # a row from before queued_at: its creation
        session.get_one(Job, old).queued_at = None
    s = status(session_factory, fakeredis.FakeRedis(), None)
    assert s.oldest_waiting_s is not None and s.oldest_waiting_s >= 644
