"""The CLI's actions record the operator (``--user``, MEDSEG_OPERATOR, the OS user) in the
audit trail; ``medseg audit`` lists it; ``medseg show`` shows attempts, log lines and the
trail (issue 21 item 6)."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import transition
from db.models import DeliveryState, Job, JobLogLine, JobState
from tests.support.history import with_result
from tests.support.jobs import add_job
from worker.cli.main import main
from worker.core.settings import Settings, get_settings
from worker.ops.audit import list_events


@pytest.fixture
def cli(cli: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch) -> sessionmaker[Session]:
    """The command line in this process (conftest), one destination (pacs) configured."""
    pacs = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 11112}
    monkeypatch.setenv("MEDSEG_DESTINATIONS", json.dumps([pacs]))
    get_settings.cache_clear()  # read again with it
    return cli


def _who(factory: sessionmaker[Session]) -> list[tuple[str | None, str, str, int | None]]:
    return [(e.actor, e.source, e.action, e.job_id) for e in reversed(list_events(factory))]


def test_cli_actions_record_the_operator(
    cli: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = add_job(cli, "cpu", state=JobState.FAILED, error="boom")
    queued = add_job(cli, "cpu")
    flagged, _ = with_result(cli, JobState.NEEDS_REVIEW, DeliveryState.WITHHELD, review="odd")
    delivered, delivery = with_result(cli, JobState.SUCCEEDED, DeliveryState.FAILED)
    assert main(["retry", str(failed), "--user", "alice"]) == 0
    monkeypatch.setenv("MEDSEG_OPERATOR", "bob")
    assert main(["cancel", str(queued)]) == 0
    assert main(["cancel", str(queued), "--user", "carol"]) == 1  # cancelled already: refused
    assert main(["deliver", "--retry", str(delivery)]) == 0
    assert main(["retry", "--failed"]) == 0
    assert main(["rerun", "--model", "lung-ct-threshold", "--user", "dave"]) == 0
    assert main(["review", str(flagged), "accept", "--by", "dr x"]) == 0
    assert _who(cli) == [
        ("alice", "cli", "retry", failed),
        ("bob", "cli", "cancel", queued),
        ("carol", "cli", "cancel", queued),
        ("bob", "cli", "redeliver", delivered),
        ("bob", "cli", "retry_all", None),
        ("dave", "cli", "rerun", None),
        ("dr x", "cli", "accept", flagged),
    ]
    assert [e.outcome for e in list_events(cli, user="carol")] == ["refused"]


def test_medseg_audit_lists_and_filters(
    cli: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    a = add_job(cli, "cpu", state=JobState.FAILED, error="boom")
    b = add_job(cli, "cpu", state=JobState.FAILED, error="boom")
    assert main(["retry", str(a), "--user", "alice"]) == 0
    assert main(["cancel", str(b), "--user", "bob"]) == 0
    capsys.readouterr()
    assert main(["audit"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "bob (cli)  cancel" in out[0] and "alice (cli)  retry" in out[1]
    assert f"job {b}" in out[0] and "failed -> cancelled" in out[0]
    assert main(["audit", "--user", "alice", "--action", "retry", "--since", "1h"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and f"job {a}" in out[0]
    assert main(["audit", "--job", str(a), "--action", "cancel"]) == 0
    assert capsys.readouterr().out.strip() == "no operator actions recorded matching"
    with pytest.raises(SystemExit):
        main(["audit", "--action", "explode"])


def test_show_prints_attempts_log_lines_and_the_trail_and_the_os_user_is_the_default(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    job_id = add_job(session_factory, "cpu")
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.worker = "medseg@one"
        transition(job, JobState.RUNNING)
        session.add(JobLogLine(job_id=job_id, attempt=1, level="WARNING", message="low contrast"))
        transition(job, JobState.FAILED, error="PermanentError: no lungs found")
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url}
    env.pop("MEDSEG_OPERATOR", None)
    retried = subprocess.run(
        [sys.executable, "-m", "worker.cli", "retry", str(job_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert retried.returncode == 0, retried.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "worker.cli", "show", str(job_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    history = shown.stdout.split(f"history of job {job_id} (queued):")[1].splitlines()
    assert history[1].strip().startswith("attempt 1  ")
    assert "on medseg@one  failed: PermanentError: no lungs found" in history[1]
    assert history[2].split() == ["WARNING", "low", "contrast"]
    assert f"{getpass.getuser()} (cli)  retry  done: failed -> queued" in history[3]
