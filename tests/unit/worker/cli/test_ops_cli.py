"""The operators' commands' rough edges (issue 21 item 10): filters, whole errors, help,
several IDs, any identifier for `show`, one-line errors instead of tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, Study, utcnow
from tests.support.jobs import add_job
from worker.cli.main import main
from worker.cli.ops import _duration
from worker.core.settings import Settings
from worker.ops.lookup import find_studies

LONG_ERROR = "no lungs found: " + "the threshold found soft tissue only " * 4 + "END"


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "--log-level", "WARNING", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _study(session_factory: sessionmaker[Session], accession: str, model: str) -> int:
    with session_factory.begin() as session:
        n = session.query(Study).count() + 1
        series = Series(
            study=Study(study_instance_uid=f"1.9.{n}", accession_number=accession),
            series_instance_uid=f"1.9.{n}.1",
        )
        job = Job(
            series=series,
            model_name=model,
            model_version="1",
            queue="cpu",
            state=JobState.FAILED,
            error=LONG_ERROR,
        )
        session.add(job)
        session.flush()
        return job.id


def test_show_finds_a_study_by_any_identifier(session_factory: sessionmaker[Session]) -> None:
    job = _study(session_factory, "ACC1", "model-a")
    _study(session_factory, "ACC1", "model-b")  # one accession, two studies
    with session_factory() as session:
        study_id = session.get_one(Job, job).series.study_id
    for key, how in (("1.9.1", "study UID"), ("1.9.1.1", "series UID"), (str(job), "job ID")):
        assert [(m.study_id, m.how) for m in find_studies(session_factory, key)] == [
            (study_id, how)
        ]
    assert len(find_studies(session_factory, "ACC1")) == 2
    assert find_studies(session_factory, "nothing") == []


def test_jobs_cancel_show_and_one_line_errors_from_the_command_line(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    a = _study(session_factory, "ACC2", "model-a")
    b = _study(session_factory, "ACC3", "model-b")
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}
    listed = _run(env, "jobs", "--model", "model-a")
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^ *{a} +failed ", listed.stdout, re.M)
    assert not re.search(rf"^ *{b} ", listed.stdout, re.M)
    assert LONG_ERROR in listed.stdout  # whole, not cut at 90 characters
    cancelled = _run(env, "cancel", str(a), "424242", str(b))
    assert cancelled.returncode == 1
    assert f"job {a} cancelled" in cancelled.stdout and f"job {b} cancelled" in cancelled.stdout
    assert cancelled.stderr.strip() == "medseg cancel: no job 424242"
    shown = _run(env, "show", "ACC3")
    assert shown.returncode == 0 and f"job {b}  model-b 1  cancelled" in shown.stdout
    missing = _run(env, "show", "1.2.404")
    assert missing.returncode == 1 and "nothing found for '1.2.404'" in missing.stderr
    for command, words in (("show", "accession number or a job ID"), ("cancel", "JOB_ID")):
        helped = _run(env, command, "--help")
        assert helped.returncode == 0 and words in helped.stdout
    down = _run(
        {**env, "MEDSEG_DATABASE_URL": "postgresql+psycopg://medseg@127.0.0.1:1/medseg"},
        "jobs",
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert down.stderr.startswith("medseg jobs: database unreachable")
    assert len(down.stderr.strip().splitlines()) == 1
    invalid = _run({**env, "MEDSEG_DEVICE": "tpu"}, "show", "x")
    assert invalid.returncode == 1 and "Traceback" not in invalid.stderr
    assert "medseg show: invalid settings" in invalid.stderr and "MEDSEG_DEVICE" in invalid.stderr


def test_status_watch_prints_a_timestamp_and_ends_on_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import worker.cli.ops as ops

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ops, "_session_factory", lambda: None)
    monkeypatch.setattr(ops, "_print_status", lambda factory: print("queues: gpu 0"))
    monkeypatch.setattr(ops.time, "sleep", interrupted)
    assert main(["status", "--watch", "2"]) == 130
    out = capsys.readouterr().out
    assert "medseg status at " in out and " UTC (every 2 s; Ctrl-C ends)" in out


def test_waiting_times_are_never_negative(session_factory: sessionmaker[Session]) -> None:
    import fakeredis

    from worker.ops.operations import status

    assert (_duration(-0.6), _duration(42), _duration(185), _duration(7800)) == (
        "0 s",
        "42 s",
        "3 min 5 s",
        "2 h 10 min",
    )
    # The database's clock ahead of ours: a job created and queued "in the future".
    future = utcnow() + timedelta(seconds=5)
    add_job(session_factory, "cpu", created_at=future, queued_at=future)
    assert status(session_factory, fakeredis.FakeRedis(), None).oldest_waiting_s == 0.0


def test_jobs_names_the_worker_of_a_running_job_and_flags_a_dead_one(
    settings: Settings, session_factory: sessionmaker[Session], redis_url: str
) -> None:
    """Issue 32 item 3, as a subprocess on a real Redis where no worker answers: the running
    job's worker and time, flagged as gone; with the broker unreachable, not flagged."""
    import uuid

    started = utcnow() - timedelta(minutes=2)
    job = add_job(
        session_factory, "cpu", state=JobState.RUNNING, worker="medseg@gone", started_at=started
    )
    env = {
        **os.environ,
        "MEDSEG_DATABASE_URL": settings.database_url,
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-jobs-{uuid.uuid4().hex[:8]}:",
    }
    listed = _run(env, "jobs", "--state", "running")
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.split()[0] == str(job))
    assert "on medseg@gone, 2 min" in line and line.endswith("(worker gone)"), line
    down = _run({**env, "MEDSEG_BROKER_URL": settings.broker_url}, "jobs", "--state", "running")
    assert "on medseg@gone, 2 min" in down.stdout and "worker gone" not in down.stdout
