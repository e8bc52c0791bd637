"""Every attempt keeps its own error, worker and timings; the lines logged while a job runs
are kept with its attempt, bounded and redacted (issue 21 item 6). Real runs of the CT model."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import transition
from db.models import Job, JobAttempt, JobLogLine, JobState
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from worker.core.errors import PermanentError
from worker.ops.audit import Actor
from worker.ops.operations import retry
from worker.pipeline.cache import ModelCache
from worker.runtime.joblog import MAX_CHARS, MAX_LINES
from worker.runtime.jobs import execute_job


def _attempts(factory: sessionmaker[Session], job_id: int) -> list[JobAttempt]:
    with factory() as session:
        return list(
            session.scalars(
                select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.number)
            )
        )


def _log(factory: sessionmaker[Session], job_id: int) -> list[JobLogLine]:
    with factory() as session:
        return list(
            session.scalars(
                select(JobLogLine).where(JobLogLine.job_id == job_id).order_by(JobLogLine.id)
            )
        )


def test_a_retry_keeps_the_old_attempts_error_and_the_new_attempt_is_the_current_one(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=8))

    def no_lungs(*args: object, **kwargs: object) -> None:
        logging.getLogger("worker.models.lung_ct").warning("odd header for 'DOE^JANE'")
        raise PermanentError("no lungs found")

    with monkeypatch.context() as patched:
        patched.setattr("worker.runtime.jobs.run_series", no_lungs)
        state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id, worker="w1")
    assert state is JobState.FAILED
    retry(session_factory, [job_id], actor=Actor("alice", "cli"))
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state is JobState.QUEUED and job.error is None and job.attempts == 0
    [first] = _attempts(session_factory, job_id)
    assert (first.number, first.worker, first.outcome) == (1, "w1", "failed")
    assert first.error == "PermanentError: no lungs found" and first.finished_at is not None

    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id, worker="w2")
    assert state is JobState.SUCCEEDED
    first, second = _attempts(session_factory, job_id)
    assert first.error == "PermanentError: no lungs found", "the old error stays with attempt 1"
    assert (second.number, second.worker, second.outcome, second.error) == (
        2,
        "w2",
        "succeeded",
        None,
    )
    assert second.timings is not None and '"infer"' in second.timings
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.attempts == 1 and job.error is None
    lines = _log(session_factory, job_id)
    by_attempt = {n: [line.message for line in lines if line.attempt == n] for n in (1, 2)}
    assert by_attempt[1] == ["odd header for '…'"], "warnings kept, quoted values redacted"
    assert any(m.startswith("stage timings: ") and "infer" in m for m in by_attempt[2])
    assert all("DOE" not in line.message for line in lines)


def test_a_run_lost_with_its_worker_is_its_own_attempt(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 1, slices=8))
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.worker = "dead"
        transition(job, JobState.RUNNING)
    assert [(a.number, a.worker, a.outcome) for a in _attempts(session_factory, job_id)] == [
        (1, "dead", None)
    ]
    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id, worker="w2")
    assert state is JobState.SUCCEEDED
    lost, run = _attempts(session_factory, job_id)
    assert (lost.outcome, lost.worker) == ("lost", "dead") and lost.finished_at is not None
    assert (run.number, run.outcome, run.worker) == (2, "succeeded", "w2")


def test_a_retryable_failure_closes_its_attempt_as_requeued(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 2, slices=4))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr("worker.runtime.jobs.run_series", broken)
    assert execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id) is (
        JobState.QUEUED
    )
    [attempt] = _attempts(session_factory, job_id)
    assert attempt.outcome == "requeued" and "CUDA out of memory" in (attempt.error or "")


def test_log_lines_are_bounded_and_only_the_jobs_own(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 3, slices=4))
    noisy = logging.getLogger("worker.models.noisy")

    def chatty(*args: object, **kwargs: object) -> None:
        other = threading.Thread(target=lambda: noisy.warning("another thread's line"))
        other.start()
        other.join()
        noisy.info("not a warning: not kept")
        for i in range(200):
            noisy.warning("line %d %s", i, "x" * 1000)
        raise PermanentError("gave up")

    monkeypatch.setattr("worker.runtime.jobs.run_series", chatty)
    execute_job(session_factory, ModelCache("cpu"), tmp_path / "r", job_id)
    lines = _log(session_factory, job_id)
    messages = [line.message for line in lines]
    assert len(lines) == MAX_LINES + 1
    assert messages[-1] == f"{200 - MAX_LINES} more line(s) not kept"
    assert all(len(m) <= MAX_CHARS for m in messages)
    assert messages[0].startswith("line 0 xxx") and messages[0].endswith("…")
    assert all(line.level == "WARNING" for line in lines[:-1])
    assert not any("another thread" in m or "not kept:" in m for m in messages)
