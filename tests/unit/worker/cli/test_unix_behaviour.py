"""The CLI behaves like a Unix tool (issue 32 item 9), as a subprocess: quiet logs unless -v,
no BrokenPipe message when its reader goes away, exit codes a script can use, rerun
--dry-run, errors without Python lists, --watch on time, status within a second."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from tests.support.factories import chest_series
from tests.support.jobs import add_job, queue_test_job, set_job
from worker.cli.main import EXIT_BROKEN_PIPE, main
from worker.core.settings import Settings


@pytest.fixture
def env(
    settings: Settings, redis_url: str, session_factory: sessionmaker[Session]
) -> dict[str, str]:
    """A real Redis with queues of their own (no worker consumes them) and the test database."""
    return {
        **os.environ,
        "MEDSEG_DATABASE_URL": settings.database_url,
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-unix-{uuid.uuid4().hex[:8]}:",
    }


def medseg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_actions_log_nothing_unless_asked(
    env: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    failed = [add_job(session_factory, "cpu", state=JobState.FAILED) for _ in range(3)]
    quiet = medseg(env, "retry", "--failed")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout == f"queued again: {', '.join(map(str, failed))}\n"
    for job in failed:
        set_job(session_factory, job, state=JobState.FAILED)
    told = medseg(env, "-v", "retry", "--failed")
    assert told.stderr.count("queued again by an operator") == 3 and " INFO " in told.stderr


def test_a_reader_that_goes_away_ends_it_quietly(env: dict[str, str]) -> None:
    """`medseg jobs | head -1` with many rows: no BrokenPipe message, exit 141 (SIGPIPE's)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "status", "--watch", "0.01"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # as head does after its lines
    assert process.wait(60) == EXIT_BROKEN_PIPE
    assert process.stderr.read() == b""


def test_status_exit_code_says_whether_something_is_wrong(
    env: dict[str, str], settings: Settings
) -> None:
    ok = medseg(env, "status")
    assert ok.returncode == 0 and "PROBLEM" not in ok.stdout, ok.stdout + ok.stderr
    down = medseg({**env, "MEDSEG_BROKER_URL": settings.broker_url}, "status")
    assert down.returncode == 1 and "PROBLEM: broker unreachable" in down.stdout
    assert down.stderr == ""


def test_rerun_dry_run_queues_nothing(
    env: dict[str, str], session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    done = queue_test_job(session_factory, chest_series(tmp_path / "a", 0, slices=2))
    failed = queue_test_job(session_factory, chest_series(tmp_path / "b", 1, slices=2))
    from worker.core.enqueue import input_key
    from worker.core.registry import get_spec

    spec = get_spec("lung-ct-threshold")
    with session_factory() as session:
        uids = [i.sop_instance_uid for i in session.get_one(Job, done).series.instances]
    key = input_key(uids, spec.name, spec.version)  # the identical job rerun leaves alone
    set_job(session_factory, done, state=JobState.SUCCEEDED, input_key=key)
    set_job(session_factory, failed, state=JobState.FAILED)
    with session_factory() as session:
        series = session.get_one(Job, failed).series_id
        before = session.scalar(select(func.count()).select_from(Job))
    plan = medseg(env, "rerun", "--model", "lung-ct-threshold", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout == f"would queue 1 job(s) (dry run, nothing queued); series: {series}\n"
    forced = medseg(env, "rerun", "--model", "lung-ct-threshold", "--dry-run", "--force")
    assert forced.stdout.startswith("would queue 2 job(s)")
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == before


def test_errors_are_sentences_not_python_lists(env: dict[str, str]) -> None:
    missing = medseg(env, "retry", "424242", "424243")
    assert (missing.returncode, missing.stderr) == (
        1,
        "medseg retry: no job(s) 424242, 424243\n",
    )
    model = medseg(env, "rerun", "--model", "nope", "--dry-run")
    assert model.returncode == 1 and "no model named nope; known: " in model.stderr
    assert "[" not in model.stderr and "'" not in model.stderr


def test_watch_refreshes_on_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The time the status took counts towards the period: every 3 s, not 3 s + its time."""
    import worker.cli.ops as ops

    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise KeyboardInterrupt

    def slow_status(factory: object) -> int:
        until = ops.time.monotonic() + 0.4  # time.sleep is the one replaced
        while ops.time.monotonic() < until:
            pass
        return 0

    monkeypatch.setattr(ops, "_session_factory", lambda: None)
    monkeypatch.setattr(ops, "_print_status", slow_status)
    monkeypatch.setattr(ops.time, "sleep", sleep)
    assert main(["status", "--watch", "3"]) == 130
    assert all(2.0 < s <= 2.6 for s in slept), slept


def test_status_answers_within_a_second_from_a_probes_view(env: dict[str, str]) -> None:
    """With a gateway's or dashboard's probe running (its view fresh in Redis), status asks no
    worker (no 1 s broadcast, Celery not even imported). Timed after the imports: Python's own
    start is not the command's to shorten."""
    script = """
import io, sys, time, contextlib, redis
from worker.core.broker_probe import BrokerView, publish_view
from worker.core.settings import get_settings
from worker.cli.main import main
settings = get_settings()
view = BrokerView({}, ["medseg@cpu1"], {"cpu": ["medseg@cpu1"], "gpu": ["medseg@cpu1"]})
publish_view(redis.Redis.from_url(settings.broker_url), view, settings.broker_key_prefix)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    main(["status"])  # its imports
    started = time.perf_counter()
    code = main(["status"])
elapsed = time.perf_counter() - started
print(code, round(elapsed, 3), "celery" in sys.modules, "medseg@cpu1" in out.getvalue())
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    code, elapsed, celery, listed = done.stdout.split()
    assert (code, celery, listed) == ("0", "False", "True")
    assert float(elapsed) < 1.0, elapsed
