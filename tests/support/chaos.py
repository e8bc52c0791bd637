"""Chaos harness: send many series with DCMTK while killing the gateway and the worker
(SIGKILL, whole process group) and restarting Redis and PostgreSQL, then check that nothing
was lost and nothing was processed twice.

Used by ``tests/integration/test_chaos.py`` (small, in CI) and ``benchmarks/chaos_soak.py``
(1,000 instances). Every service is private to the run: its own Redis and its own PostgreSQL
cluster (initdb in a temporary folder) on free ports, so restarting them disturbs nobody.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, JobState, Result, Series
from db.session import make_engine, make_session_factory
from worker.devtools.localstack import (
    dcmtk_env,
    dcmtk_tool,
    free_port,
    start_medseg,
    start_redis,
    wait_for_port,
)
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChaosConfig:
    series: int = 8
    instances_per_series: int = 12
    image_size: int = 64
    disruption_every_s: float = 3.0
    pause_between_series_s: float = 0.5  # modalities send over time, not all at once
    settle_timeout_s: float = 240.0
    worker_concurrency: int = 1
    extra_env: tuple[tuple[str, str], ...] = ()  # e.g. (('MEDSEG_BATCH_INDEX', 'true'),)


@dataclass
class ChaosReport:
    series_sent: int = 0
    instances_sent: int = 0
    storescu_runs: int = 0
    storescu_failures: int = 0
    disruptions: list[tuple[float, str]] = field(default_factory=list)
    seconds_to_send: float = 0.0
    seconds_to_settle: float = 0.0
    problems: list[str] = field(default_factory=list)
    job_states: dict[str, int] = field(default_factory=dict)
    max_attempts_used: int = 0


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


class PrivateRedis:
    """A disk-less redis-server on a fixed port that can be killed and started again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        _, self.process = start_redis(self.workdir, self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb), stopped with ``-m immediate`` (a crash)."""

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.port = free_port()
        # Not under pytest's tmp folders: their 0700 parents keep the postgres user out.
        self.root = Path(tempfile.mkdtemp(prefix="medseg-chaos-pg-"))
        self.data = self.root / "data"
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.root, "postgres", "postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str) -> None:
        done = _run([*self._as_postgres, str(self.bindir / args[0]), *args[1:]], timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr or done.stdout}")

    def init(self) -> None:
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "pg.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def crash(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.crash()
        shutil.rmtree(self.root, ignore_errors=True)


class Role:
    """``medseg ARGS`` in a process group of its own, so SIGKILL takes its children too."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_medseg(self.args, self.env, self.log, append=True, new_session=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def make_series(root: Path, config: ChaosConfig) -> dict[str, list[str]]:
    """Write the chest CT series to send; returns {series UID: SOP instance UIDs}.

    Each instance announces its series' size (Images in Acquisition), as CT scanners do, so
    a series completes when it is whole, not on a quiet period a disruption could cause.
    """
    sent: dict[str, list[str]] = {}
    for index in range(config.series):
        phantom = make_chest_phantom(
            seed=index,
            slices=config.instances_per_series,
            size=config.image_size,
            pixel_spacing=5.0,
        )
        paths = write_chest_series(phantom, root / f"series-{index:03d}")
        uids = []
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.ImagesInAcquisition = len(paths)
            ds.save_as(path)
            uids.append(str(ds.SOPInstanceUID))
        sent[str(ds.SeriesInstanceUID)] = uids
    return sent


class Chaos:
    def __init__(self, workdir: Path, config: ChaosConfig) -> None:
        self.workdir = workdir
        self.config = config
        self.report = ChaosReport()
        self.redis = PrivateRedis(workdir)
        self.postgres = PrivatePostgres()
        self.port = free_port()
        self.data_dir = workdir / "data"
        self._start = time.monotonic()
        self._sending = threading.Event()
        self._stop_chaos = threading.Event()

    def env(self) -> dict[str, str]:
        limits = {"fetal-head-unet": 60, "fetal-brain-unet": 60}
        return {
            "MEDSEG_DATA_DIR": str(self.data_dir),
            "MEDSEG_DATABASE_URL": self.postgres.url,
            "MEDSEG_BROKER_URL": self.redis.url,
            "MEDSEG_HOST": "127.0.0.1",
            "MEDSEG_PORT": str(self.port),
            "MEDSEG_MIN_FREE_BYTES": "0",
            "MEDSEG_SERIES_QUIET_SECONDS": "60",  # completion by the announced count
            "MEDSEG_COMPLETION_POLL_SECONDS": "0.2",
            "MEDSEG_JOB_MAX_ATTEMPTS": "20",  # a job may be killed several times
            "MEDSEG_JOB_TIME_LIMIT_SECONDS": "60",
            "MEDSEG_MODEL_TIME_LIMITS": json.dumps(limits),
            "MEDSEG_REQUEUE_AFTER_SECONDS": "8",  # Redis restarts lose queued messages
            "MEDSEG_SWEEP_INTERVAL_SECONDS": "2",
            **dict(self.config.extra_env),
        }

    def _event(self, what: str) -> None:
        self.report.disruptions.append((round(time.monotonic() - self._start, 1), what))
        logger.info("chaos: %s", what)

    # -- the disruptions ------------------------------------------------------------------
    def _disrupt(self, step: int) -> None:
        kind = step % 4
        if kind == 0:
            self._event("SIGKILL worker")
            self.worker.kill()
            time.sleep(0.5)
            self.worker.start()
        elif kind == 1:
            self._event("SIGKILL gateway")
            self.gateway.kill()
            time.sleep(0.5)
            self.gateway.start()
        elif kind == 2:
            self._event("restart Redis (SIGKILL, nothing kept)")
            self.redis.kill()
            time.sleep(1.0)
            self.redis.start()
        else:
            self._event("restart PostgreSQL (immediate stop = crash)")
            self.postgres.crash()
            time.sleep(1.0)
            self.postgres.start()

    def _chaos_loop(self) -> None:
        step = 0
        # Every kind of disruption at least once, and on while anything is being sent.
        while not self._stop_chaos.is_set() and (self._sending.is_set() or step < 4):
            if self._stop_chaos.wait(self.config.disruption_every_s):
                return
            try:
                self._disrupt(step)
            except Exception as exc:
                self.report.problems.append(f"disruption {step} failed: {exc}")
                return
            step += 1

    # -- sending ----------------------------------------------------------------------------
    def _send(self, folder: Path) -> None:
        deadline = time.monotonic() + self.config.settle_timeout_s
        while time.monotonic() < deadline:
            self.report.storescu_runs += 1
            done = _run(
                storescu_with_timeouts(self.port, folder, "CHAOS"),
                env=dcmtk_env(),
                timeout=120,
            )
            output = done.stdout + done.stderr
            if done.returncode == 0 and not any(
                line.startswith(("E:", "F:")) for line in output.splitlines()
            ):
                return
            self.report.storescu_failures += 1
            time.sleep(0.5)  # a modality retries the whole series
        self.report.problems.append(f"{folder.name}: never sent completely")

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> ChaosReport:
        send_root = self.workdir / "send"
        expected = make_series(send_root, self.config)
        self.report.series_sent = len(expected)
        self.report.instances_sent = sum(len(v) for v in expected.values())
        self.redis.start()
        self.postgres.init()
        self.postgres.start()
        env = self.env()
        done = _run(
            [sys.executable, "-m", "worker.cli", "db", "upgrade"],
            env={**os.environ, **env},
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"medseg db upgrade failed: {done.stderr}")
        self.gateway = Role(["gateway"], env, self.workdir / "gateway.log")
        self.worker = Role(
            [
                "worker",
                "--queues",
                "gpu,cpu",
                "--concurrency",
                str(self.config.worker_concurrency),
                "--name",
                "chaos@%h",
            ],
            env,
            self.workdir / "worker.log",
        )
        engine = make_engine(self.postgres.url)
        try:
            self.gateway.start()
            self.worker.start()
            wait_for_port(self.port, process=self.gateway.process)
            self._start = time.monotonic()
            self._sending.set()
            chaos = threading.Thread(target=self._chaos_loop, name="chaos", daemon=True)
            chaos.start()
            for folder in sorted(send_root.iterdir()):
                self._send(folder)
                time.sleep(self.config.pause_between_series_s)
            self.report.seconds_to_send = time.monotonic() - self._start
            self._sending.clear()
            chaos.join(timeout=self.config.disruption_every_s * 6 + 60)
            self._stop_chaos.set()
            self._settle(make_session_factory(engine), expected)
        finally:
            self._stop_chaos.set()
            engine.dispose()
            self.gateway.stop()
            self.worker.stop()
            self.redis.kill()
            self.postgres.destroy()
        return self.report

    def _settle(
        self, session_factory: sessionmaker[Session], expected: dict[str, list[str]]
    ) -> None:
        settle_start = time.monotonic()
        deadline = settle_start + self.config.settle_timeout_s
        problems: list[str] = ["not checked"]
        while time.monotonic() < deadline:
            try:
                problems = check(session_factory, expected, self.data_dir, self.report)
            except Exception as exc:  # the database may be restarting
                problems = [f"check failed: {exc}"]
            if not problems:
                break
            time.sleep(1.0)
        self.report.seconds_to_settle = time.monotonic() - settle_start
        self.report.problems.extend(problems)


def check(
    session_factory: sessionmaker[Session],
    expected: dict[str, list[str]],
    data_dir: Path,
    report: ChaosReport,
) -> list[str]:
    """Every sent instance on disk and in the DB; every series exactly one successful job,
    with exactly one result; no job left waiting."""
    problems: list[str] = []
    with session_factory() as session:
        for series_uid, sop_uids in expected.items():
            series = session.scalars(
                select(Series).where(Series.series_instance_uid == series_uid)
            ).one_or_none()
            if series is None:
                problems.append(f"series {series_uid}: not in the database")
                continue
            stored = {
                row.sop_instance_uid: row.path
                for row in session.scalars(select(Instance).where(Instance.series_id == series.id))
            }
            missing = set(sop_uids) - set(stored)
            if missing:
                problems.append(f"series {series_uid}: {len(missing)} instances not in the DB")
            for sop_uid, path in stored.items():
                if not Path(path).is_file():
                    problems.append(f"instance {sop_uid}: file {path} missing")
            jobs = session.scalars(select(Job).where(Job.series_id == series.id)).all()
            succeeded = [j for j in jobs if j.state is JobState.SUCCEEDED]
            waiting = [j for j in jobs if j.state not in (JobState.SUCCEEDED,)]
            if len(succeeded) != 1 or waiting:
                problems.append(
                    f"series {series_uid}: jobs "
                    f"{[(j.id, j.state.value, j.attempts, j.error) for j in jobs]}"
                )
                continue
            results = session.scalar(
                select(func.count()).select_from(Result).where(Result.job_id == succeeded[0].id)
            )
            if results != 1:
                problems.append(f"series {series_uid}: {results} results for one job")
        # After the series: a job that finishes between two statements must not leave the
        # summary saying "running" beside a clean check (jobs never leave succeeded).
        rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        report.job_states = {state.value: int(count) for state, count in rows}
        report.max_attempts_used = session.scalar(select(func.max(Job.attempts))) or 0
    for sop_path in (data_dir / "incoming").rglob("*.dcm") if data_dir.exists() else []:
        if sop_path.stat().st_size == 0:
            problems.append(f"{sop_path}: empty file")
    return problems


def describe(report: ChaosReport) -> str:
    lines = [
        f"series sent: {report.series_sent}, instances: {report.instances_sent}",
        f"storescu runs: {report.storescu_runs} ({report.storescu_failures} failed and resent)",
        f"disruptions: {len(report.disruptions)}: "
        + ", ".join(f"{t:.0f}s {what}" for t, what in report.disruptions),
        f"sending took {report.seconds_to_send:.1f} s, settling {report.seconds_to_settle:.1f} s",
        f"jobs by state: {report.job_states}; most attempts by one job: {report.max_attempts_used}",
        f"problems: {len(report.problems)}",
        *[f"  - {p}" for p in report.problems[:30]],
    ]
    return "\n".join(lines)


def logs(workdir: Path, tail: int = 4000) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in workdir.glob("*.log")
    )


def run_chaos(workdir: Path, config: ChaosConfig) -> ChaosReport:
    workdir.mkdir(parents=True, exist_ok=True)
    return Chaos(workdir, config).run()


def storescu_with_timeouts(port: int, folder: Path, calling_ae: str) -> list[str]:
    """DCMTK storescu sending ``folder`` to the gateway with connect, ACSE and DIMSE timeouts,
    so a peer killed mid-transfer ends the run instead of hanging it."""
    return [
        dcmtk_tool("storescu"),
        *("-aet", calling_ae, "-aec", "MEDSEG", "+sd", "+r"),
        *("-to", "10", "-ta", "10", "-td", "20"),
        *("127.0.0.1", str(port), str(folder)),
    ]
