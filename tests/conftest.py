"""Shared fixtures: settings in a temp dir, migrated databases, real-service gates."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.session import make_engine, make_session_factory
from worker.localstack import find_dcmtk_tool, free_port
from worker.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("MEDSEG_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
POSTGRES_ADMIN_URL = os.environ.get(
    "MEDSEG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def need(what: str, available: bool) -> None:
    """Skip a test whose service is missing, but fail it in CI (CI=true), where it must run."""
    if available:
        return
    message = f"{what} is not available"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required)")
    pytest.skip(message)


# DCMTK programs that pynetdicom shadows with console scripts of the same name in the venv.
_DCMTK = frozenset({"storescu", "storescp", "echoscu", "echoscp", "findscu", "movescu", "getscu"})


def need_tool(name: str) -> str:
    """A command from PATH or from this venv's bin (dcmqi's tools install there); for DCMTK's
    programs, DCMTK's own, never pynetdicom's scripts of the same name."""
    if name in _DCMTK:
        path = find_dcmtk_tool(name)
    else:
        path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    need(f"{name} (make system-deps / make venv installs it)", path is not None)
    assert path is not None
    return path


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines dciodvfy reports for ``path`` (empty = valid IOD)."""
    need_tool("dciodvfy")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        host="127.0.0.1",
        port=free_port(),
        series_quiet_seconds=0.5,
        completion_poll_seconds=0.1,
        min_free_bytes=0,
        broker_url="redis://127.0.0.1:1/0",
    )


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    need("Redis at 127.0.0.1:6379", _port_open("127.0.0.1", 6379))
    return REDIS_URL  # each stack uses its own key prefix: nothing to flush, nothing shared


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped afterwards."""
    need("PostgreSQL at 127.0.0.1:5432", _port_open("127.0.0.1", 5432))
    name = f"medseg_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
