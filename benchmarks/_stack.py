"""The real service on loopback for the benchmarks: private Redis, SQLite, gateway, worker(s),
plus phantom series and DCMTK storescu to send them. Not a test helper: benchmarks only."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import _machine
import pydicom
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import FINISHED_WITH_RESULT, TERMINAL
from db.migrate import upgrade
from db.models import Job, OutputFile, Result, Series
from db.session import make_engine, make_session_factory
from worker.devtools.localstack import (
    free_port,
    start_medseg,
    start_redis,
    stop,
    storescu,
    wait_for_port,
)
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series


def machine() -> str:
    """One line about the machine the numbers come from, with torch's version."""
    import torch

    return _machine.machine(f", torch {torch.__version__}")


def announce_count(paths: list[Path]) -> None:
    """Set Images in Acquisition so the series completes on its last instance, not on quiet."""
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.ImagesInAcquisition = len(paths)
        ds.save_as(path, enforce_file_format=True)


def us_series(folder: Path, seed: int) -> list[Path]:
    """One single-frame obstetric US series (fetal head model, gpu queue)."""
    path = folder / "US0001.dcm"
    write_us_phantom(path, seed)
    announce_count([path])
    return [path]


def ct_series(folder: Path, seed: int, slices: int = 60, size: int = 512) -> list[Path]:
    """One chest CT series of ``slices`` slices of ``size``² (lung model, cpu queue)."""
    # A 358 mm field of view whatever the matrix, so the lungs are in view.
    phantom = make_chest_phantom(
        seed=seed, slices=slices, size=size, pixel_spacing=0.7 * 512 / size
    )
    paths = write_chest_series(phantom, folder)
    announce_count(paths)
    return paths


@dataclass
class Stack:
    """Redis + gateway + one worker with ``concurrency`` processes, all on loopback."""

    root: Path
    concurrency: int = 1
    quiet_seconds: float = 5.0
    worker_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _engine: Engine | None = None

    def __enter__(self) -> Stack:
        data = (self.root / "data").resolve()
        self.port = free_port()
        url, redis = start_redis(self.root / "redis")
        self._processes.append(redis)
        self.env = {
            "MEDSEG_DATA_DIR": str(data),
            "MEDSEG_HOST": "127.0.0.1",
            "MEDSEG_PORT": str(self.port),
            "MEDSEG_BROKER_URL": url,
            "MEDSEG_SERIES_QUIET_SECONDS": str(self.quiet_seconds),
            "MEDSEG_COMPLETION_POLL_SECONDS": "0.1",
            "MEDSEG_MIN_FREE_BYTES": "0",
            "MEDSEG_DEVICE": "cpu",
            "MEDSEG_DATABASE_URL": f"sqlite:///{data / 'medseg.db'}",
        }
        upgrade(self.env["MEDSEG_DATABASE_URL"])
        logs = self.root / "logs"
        gateway = start_medseg(["--log-level", "WARNING", "gateway"], self.env, logs / "gw.log")
        self._processes.append(gateway)
        worker_args = ["--log-level", "WARNING", "worker", "--concurrency", str(self.concurrency)]
        self._processes.append(
            start_medseg(worker_args, {**self.env, **self.worker_env}, logs / "worker.log")
        )
        wait_for_port(self.port, process=gateway)
        self._engine = make_engine(self.env["MEDSEG_DATABASE_URL"])
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self._processes):
            stop(process)
        if self._engine is not None:
            self._engine.dispose()

    @property
    def sessions(self) -> sessionmaker[Session]:
        assert self._engine is not None
        return make_session_factory(self._engine)

    def send(self, folder: Path) -> None:
        done = storescu(folder, self.port, "MEDSEG", calling_ae="BENCH")
        if done.returncode != 0:
            sys.exit(f"storescu failed: {done.stderr[-400:]}")

    def wait_warm(self, folder: Path, timeout: float = 300.0) -> None:
        """Send one series and wait for its job: worker started, model loaded."""
        self.send(folder)
        self.wait_jobs(1, timeout)

    def wait_jobs(self, count: int, timeout: float) -> list[Job]:
        """Wait until ``count`` jobs exist and all are finished; returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as session:
                jobs = list(session.scalars(select(Job).order_by(Job.id)))
            if len(jobs) >= count and all(j.state in TERMINAL for j in jobs):
                return jobs
            time.sleep(0.05)
        sys.exit(f"timed out waiting for {count} jobs; logs in {self.root / 'logs'}")

    def seg_of(self, series_uid: str, timeout: float) -> tuple[Path, Job, Series]:
        """Wait for the finished job of ``series_uid``; returns its SEG path, job and series."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.sessions() as session:
                row = session.execute(
                    select(Job, Series)
                    .join(Series, Job.series_id == Series.id)
                    .where(Series.series_instance_uid == series_uid)
                    .order_by(Job.id.desc())
                ).first()
                if row is not None and row[0].state in TERMINAL:
                    job, series = row
                    if job.state not in FINISHED_WITH_RESULT:
                        sys.exit(f"job {job.id} {job.state.value}: {job.error}")
                    seg = session.scalar(
                        select(OutputFile.path)
                        .join(Result, OutputFile.result_id == Result.id)
                        .where(Result.job_id == job.id, OutputFile.kind == "seg")
                    )
                    assert seg is not None
                    return Path(seg), job, series
            time.sleep(0.02)
        sys.exit(f"no SEG for series {series_uid} after {timeout} s")
