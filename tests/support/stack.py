"""A real medseg stack for integration tests: DCMTK storescp as the PACS, the ``MEDSEG_*``
environment of a gateway and a one-process Celery worker on the test Redis and PostgreSQL,
the running processes with their logs, the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import TERMINAL
from db.models import Job, Series
from db.session import make_engine, make_session_factory
from tests.support.tools import need_tool
from worker.devtools.localstack import dcmtk_env, free_port, start_medseg, stop, wait_for_port


@dataclass(frozen=True)
class Pacs:
    """A DCMTK storescp (AE title PACS) on 127.0.0.1 that writes what it receives to ``folder``."""

    folder: Path
    port: int

    @property
    def destination(self) -> dict[str, object]:
        """Its entry in ``MEDSEG_DESTINATIONS``."""
        return {"type": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                "port": self.port}  # fmt: skip

    def sop_instance_uids(self) -> set[str]:
        """The SOP Instance UIDs of every object it has received."""
        return {
            str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in self.folder.iterdir()
        }


@contextlib.contextmanager
def dcmtk_pacs(folder: Path) -> Iterator[Pacs]:
    """Start storescp on a free port, wait until it listens; stop it afterwards."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [need_tool("storescp"), "-aet", "PACS", "-od", str(folder), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process=process)
        yield Pacs(folder, port)
    finally:
        stop(process)


def stack_env(
    root: Path,
    redis_url: str,
    postgres_url: str,
    destinations: list[dict[str, object]],
    *,
    quiet_seconds: float = 1.5,
) -> dict[str, str]:
    """The environment of a stack with its data under ``root``, listening on a free port as
    AE MEDSEG; its own Redis key prefix, so another test run on the same Redis cannot take its
    jobs."""
    return {
        "MEDSEG_DATA_DIR": str(root / "data"),
        "MEDSEG_DATABASE_URL": postgres_url,
        "MEDSEG_BROKER_URL": redis_url,
        "MEDSEG_BROKER_KEY_PREFIX": f"medseg-test-{uuid.uuid4().hex[:8]}:",
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(free_port()),
        "MEDSEG_AE_TITLE": "MEDSEG",
        "MEDSEG_SERIES_QUIET_SECONDS": str(quiet_seconds),
        "MEDSEG_COMPLETION_POLL_SECONDS": "0.2",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_DESTINATIONS": json.dumps(destinations),
    }


@dataclass(frozen=True)
class Stack:
    """A running gateway and worker: their environment, the folder of their logs and data."""

    root: Path
    env: dict[str, str]
    session_factory: sessionmaker[Session]

    @property
    def port(self) -> int:
        return int(self.env["MEDSEG_PORT"])

    @property
    def data_dir(self) -> Path:
        return Path(self.env["MEDSEG_DATA_DIR"])

    def logs(self) -> str:
        """The last lines of every process' log, for a failure message."""
        return stack_logs(self.root)


def stack_logs(root: Path) -> str:
    """The last 3000 characters of each ``*.log`` in ``root``, for a failure message."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in root.glob("*.log")
    )


@contextlib.contextmanager
def running_stack(root: Path, env: dict[str, str]) -> Iterator[Stack]:
    """Start ``medseg gateway`` and ``medseg worker --concurrency 1`` with ``env`` (logs in
    ``root``), wait until the gateway listens; stop both afterwards."""
    gateway = start_medseg(["gateway"], env, root / "gateway.log")
    worker = start_medseg(["worker", "--concurrency", "1"], env, root / "worker.log")
    engine = make_engine(env["MEDSEG_DATABASE_URL"])
    try:
        wait_for_port(int(env["MEDSEG_PORT"]), process=gateway)
        yield Stack(root, env, make_session_factory(engine))
    finally:
        stop(gateway)
        stop(worker)
        engine.dispose()


@dataclass(frozen=True)
class PacsStack(Stack):
    """A running stack that delivers to a DCMTK PACS."""

    pacs: Pacs


@contextlib.contextmanager
def running_pacs_stack(
    root: Path, redis_url: str, postgres_url: str, extra_env: dict[str, str]
) -> Iterator[PacsStack]:
    """A PACS, then a stack that delivers to it (series quiet after 1 s), ``extra_env`` over
    its environment."""
    with dcmtk_pacs(root / "pacs") as pacs:
        env = stack_env(root, redis_url, postgres_url, [pacs.destination], quiet_seconds=1.0)
        with running_stack(root, {**env, **extra_env}) as stack:
            yield PacsStack(stack.root, stack.env, stack.session_factory, pacs)


def finished_job(stack: Stack, series_uid: str, timeout: float = 180.0) -> Job:
    """The job of ``series_uid`` once it is in a terminal state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.session_factory() as session:
            job = session.scalar(
                select(Job).join(Series).where(Series.series_instance_uid == series_uid)
            )
            if job is not None and job.state in TERMINAL:
                return job
        time.sleep(0.3)
    raise AssertionError(f"no finished job in {timeout} s\n{stack.logs()}")


def medseg_cli(
    env: dict[str, str], *args: str, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """``python -m worker.cli ARGS`` with ``env`` over this process' environment."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
