"""``medseg users`` and the CLI's role check (issue 30 item 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import JobState
from tests.support.jobs import add_job
from worker.cli.audit import NOT_ALLOWED
from worker.cli.main import main
from worker.core.settings import Settings, get_settings
from worker.ops import people
from worker.ops.audit import list_events

ROOT = Path(__file__).resolve().parents[4]


def test_users_add_list_passwd_disable_as_a_subprocess(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    env = {**os.environ, "MEDSEG_DATABASE_URL": settings.database_url, "PYTHONPATH": str(ROOT)}

    def medseg(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "users", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    added = medseg("add", "alice", "--role", "reviewer", stdin="first password\n")
    assert added.returncode == 0, added.stderr
    assert "first password" not in added.stdout + added.stderr
    assert medseg("add", "alice", "--role", "viewer", stdin="x" * 9 + "\n").returncode == 1
    assert medseg("add", "bob", "--role", "viewer", stdin="short\n").returncode == 1
    assert people.check_login(session_factory, "alice", "first password") is not None
    assert medseg("passwd", "alice", stdin="second password\n").returncode == 0
    assert people.check_login(session_factory, "alice", "first password") is None
    assert people.check_login(session_factory, "alice", "second password") is not None
    assert medseg("disable", "alice").returncode == 0
    assert people.check_login(session_factory, "alice", "second password") is None
    listed = medseg("list").stdout.splitlines()
    assert listed[1].split()[:4] == ["alice", "reviewer", "local", "disabled"]
    bad_role = medseg("add", "carl", "--role", "root", stdin="a password!\n")
    assert bad_role.returncode == 2 and "invalid choice" in bad_role.stderr


def test_cli_actions_check_the_named_accounts_role(
    cli: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    people.add(cli, "vera", "viewer", "vera's password")
    people.add(cli, "otto", "operator", "otto's password")
    failed = add_job(cli, "cpu", state=JobState.FAILED, error="boom")
    assert main(["retry", str(failed), "--user", "vera"]) == NOT_ALLOWED
    assert main(["users", "add", "eve", "--role", "admin", "--user", "otto"]) == NOT_ALLOWED
    assert main(["retry", str(failed), "--user", "otto"]) == 0
    people.disable(cli, "otto")
    monkeypatch.setenv("MEDSEG_OPERATOR", "otto")
    assert main(["cancel", str(failed)]) == NOT_ALLOWED
    # Not an account: trusted (the CLI holds the database's credentials), as before.
    assert main(["cancel", str(failed), "--user", "root"]) == 0
    events = [(e.actor, e.action, e.outcome, e.detail) for e in reversed(list_events(cli))]
    assert events == [
        ("vera", "retry", "refused", "role viewer may not retry"),
        ("otto", "users", "refused", "role operator may not users"),
        ("otto", "retry", "done", events[2][3]),
        ("otto", "cancel", "refused", "account otto is disabled"),
        ("root", "cancel", "done", events[4][3]),
    ]


def test_require_account_refuses_unknown_names(
    cli: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDSEG_CLI_REQUIRE_ACCOUNT", "true")
    get_settings.cache_clear()
    failed = add_job(cli, "cpu", state=JobState.FAILED, error="boom")
    assert main(["retry", str(failed), "--user", "stranger"]) == NOT_ALLOWED
    people.add(cli, "ada", "admin", "ada's password")
    assert main(["retry", str(failed), "--user", "ada"]) == 0
    assert [e.outcome for e in list_events(cli, user="stranger")] == ["refused"]
