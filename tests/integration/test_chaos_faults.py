"""Targeted chaos (issue 18): one fault each, on real processes and DCMTK storescu.

- the gateway SIGKILLed mid-series and restarted, the series resent whole (item 4): no result
  on the partial series is delivered, the job that counts covers every slice;
- a flood of half-open associations from three sources while another source sends a series;
- PostgreSQL crashed and restarted while a series is sent with ``MEDSEG_BATCH_INDEX=true``:
  no acknowledged instance lost, the series completes once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import TERMINAL
from db.models import Delivery, DeliveryState, Instance, Job, JobState, Result, Series
from db.session import make_engine, make_session_factory
from tests.support.chaos import (
    PrivatePostgres,
    PrivateRedis,
    Role,
    logs,
    postgres_bindir,
    storescu_with_timeouts,
)
from tests.support.flood import half_open_flood
from tests.support.tools import need, need_tool, wait_until
from worker.core.enqueue import input_key
from worker.devtools.localstack import dcmtk_env, free_port, wait_for_port
from worker.models.lung_ct.phantoms import make_chest_phantom, write_chest_series

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

SUCCESS = 0x0000


@dataclass
class Stack:
    """Private Redis, a database (private PostgreSQL or SQLite), the gateway, maybe a worker."""

    workdir: Path
    env: dict[str, str]
    port: int
    data_dir: Path
    gateway: Role
    worker: Role | None
    session_factory: sessionmaker[Session]
    postgres: PrivatePostgres | None = None

    def incoming_files(self) -> list[Path]:
        incoming = self.data_dir / "incoming"
        if not incoming.exists():
            return []
        return [p for p in incoming.rglob("*.dcm") if ".rejected" not in p.parts]

    def restart_gateway(self) -> None:
        self.gateway.kill()
        self.gateway.start()
        wait_for_port(self.port, timeout=60, process=self.gateway.process)


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    env: dict[str, str],
    *,
    postgres: bool,
    worker: bool,
    start_worker: bool = True,
) -> Iterator[Stack]:
    need_tool("storescu")
    need_tool("redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    redis = PrivateRedis(workdir)
    pg: PrivatePostgres | None = None
    port = free_port()
    data_dir = workdir / "data"
    if postgres:
        need("PostgreSQL server binaries (initdb, pg_ctl)", postgres_bindir() is not None)
        pg = PrivatePostgres()
    full_env = {
        "MEDSEG_DATA_DIR": str(data_dir),
        "MEDSEG_DATABASE_URL": pg.url if pg else f"sqlite:///{data_dir / 'medseg.db'}",
        "MEDSEG_BROKER_URL": redis.url,
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(port),
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_COMPLETION_POLL_SECONDS": "0.2",
        "MEDSEG_SWEEP_INTERVAL_SECONDS": "2",
        **env,
    }
    gateway = Role(["gateway"], full_env, workdir / "gateway.log")
    worker_role = (
        Role(
            ["worker", "--queues", "gpu,cpu", "--concurrency", "1", "--name", "faults@%h"],
            full_env,
            workdir / "worker.log",
        )
        if worker
        else None
    )
    engine = None
    try:
        redis.start()
        if pg is not None:
            pg.init()
            pg.start()
        data_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "worker.cli", "db", "upgrade"],
            env={**os.environ, **full_env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        engine = make_engine(full_env["MEDSEG_DATABASE_URL"])
        gateway.start()
        if worker_role is not None and start_worker:
            worker_role.start()
        wait_for_port(port, timeout=60, process=gateway.process)
        yield Stack(
            workdir,
            full_env,
            port,
            data_dir,
            gateway,
            worker_role,
            make_session_factory(engine),
            pg,
        )
    finally:
        gateway.stop()
        if worker_role is not None:
            worker_role.stop()
        if engine is not None:
            engine.dispose()
        redis.kill()
        if pg is not None:
            pg.destroy()


def write_series(folder: Path, slices: int, *, seed: int = 0, announce: bool) -> list[str]:
    """A chest CT phantom series of ``slices`` small slices; its SOP Instance UIDs. With
    ``announce`` each instance carries Images in Acquisition (complete at that count); without,
    the series completes on its quiet period."""
    phantom = make_chest_phantom(seed=seed, slices=slices, size=64, pixel_spacing=5.0)
    uids = []
    for path in write_chest_series(phantom, folder):
        ds = pydicom.dcmread(path)
        if announce:
            ds.ImagesInAcquisition = slices
            ds.save_as(path)
        uids.append(str(ds.SOPInstanceUID))
    return uids


def _storescu_cmd(port: int, folder: Path) -> list[str]:
    return storescu_with_timeouts(port, folder, "FAULTS")


def _stored_sops(stack: Stack, series_uid: str) -> set[str]:
    """The SOP Instance UIDs the database holds for ``series_uid``."""
    with stack.session_factory() as session:
        return set(
            session.scalars(
                select(Instance.sop_instance_uid)
                .join(Series)
                .where(Series.series_instance_uid == series_uid)
            ).all()
        )


def _sent_whole(done: subprocess.CompletedProcess[str]) -> bool:
    output = done.stdout + done.stderr
    return done.returncode == 0 and not any(
        line.startswith(("E:", "F:")) for line in output.splitlines()
    )


def send_until_whole(port: int, folder: Path, timeout: float = 60.0) -> int:
    """storescu the folder, resending it whole after a failure (as a modality does); the
    number of runs."""
    deadline = time.monotonic() + timeout
    runs = 0
    while time.monotonic() < deadline:
        runs += 1
        done = subprocess.run(
            _storescu_cmd(port, folder),
            env=dcmtk_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if _sent_whole(done):
            return runs
        time.sleep(0.3)
    raise AssertionError(f"{folder} never sent whole in {timeout} s")


class Receiver:
    """A PACS in this process (pynetdicom storage SCP) results are delivered to."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[str] = []
        ae = AE(ae_title="PACS")
        ae.supported_contexts = AllStoragePresentationContexts
        server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )
        assert server is not None  # not blocking: the server runs in its own thread
        self._server = server

    def _store(self, event: Event) -> int:
        self.received.append(str(event.dataset.SOPInstanceUID))
        return SUCCESS

    def destination(self) -> dict[str, object]:
        return {
            "type": "dicom",
            "name": "pacs",
            "ae_title": "PACS",
            "host": "127.0.0.1",
            "port": self.port,
            "send_needs_review": True,
            "send_not_validated": True,
        }

    def close(self) -> None:
        self._server.shutdown()


def _jobs(stack: Stack, series_uid: str) -> list[Job]:
    with stack.session_factory() as session:
        return list(
            session.scalars(
                select(Job).join(Series).where(Series.series_instance_uid == series_uid)
            )
        )


def _deliveries(stack: Stack, job_ids: list[int]) -> dict[int, list[DeliveryState]]:
    with stack.session_factory() as session:
        rows = session.execute(
            select(Result.job_id, Delivery.state)
            .join(Delivery, Delivery.result_id == Result.id)
            .where(Result.job_id.in_(job_ids))
        ).all()
    found: dict[int, list[DeliveryState]] = {job_id: [] for job_id in job_ids}
    for job_id, state in rows:
        found[job_id].append(state)
    return found


@pytest.mark.parametrize("resend", ["at_once", "after_the_quiet_period"])
def test_gateway_killed_mid_series_and_restarted_delivers_only_the_whole_series(
    tmp_path: Path, resend: str
) -> None:
    """Item 4 end to end: storescu 80 slices (no Images in Acquisition: completion by quiet
    period), SIGKILL the gateway's process group partway, start it again, resend the series
    whole: at once (the restart's quiet period holds the series open: no partial job), or
    only after the quiet period (the partial series completes and gets a job, queued while
    the worker is not yet started; the resend supersedes it: cancelled). A job made on the
    partial series delivers nothing; the job whose result is delivered covers all 80
    slices."""
    late = resend == "after_the_quiet_period"
    slices = 80
    folder = tmp_path / "send"
    sop_uids = write_series(folder, slices, announce=False)
    series_uid = str(pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID)
    receiver = Receiver()
    env = {
        "MEDSEG_SERIES_QUIET_SECONDS": "5",
        "MEDSEG_DESTINATIONS": json.dumps([receiver.destination()]),
        "MEDSEG_JOB_TIME_LIMIT_SECONDS": "60",
    }
    try:
        with running_stack(
            tmp_path / "stack", env, postgres=False, worker=True, start_worker=not late
        ) as stack:
            first = subprocess.Popen(
                _storescu_cmd(stack.port, folder),
                env=dcmtk_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(lambda: len(stack.incoming_files()) >= 25, timeout=30)
                stack.gateway.kill()  # SIGKILL, whole process group, mid-association
                first.wait(30)
            finally:
                if first.poll() is None:
                    first.kill()
                    first.wait()
            stored_before = len(stack.incoming_files())
            assert stored_before < slices, "the series was sent whole before the kill"
            # The sender resends the series whole (as a modality does): at once, well inside
            # the quiet period that counts from the restart; or after it, once the partial
            # series has its job.
            stack.restart_gateway()
            if late:  # the partial series is complete a quiet period after the restart
                wait_until(lambda: len(_jobs(stack, series_uid)) == 1, timeout=30, interval=0.2)
            runs = send_until_whole(stack.port, folder)
            if late:
                assert stack.worker is not None
                stack.worker.start()

            def final_delivered() -> bool:
                jobs = _jobs(stack, series_uid)
                done = [j for j in jobs if j.superseded_at is None and j.state in TERMINAL]
                if not done:
                    return False
                states = _deliveries(stack, [j.id for j in done])
                return any(DeliveryState.SENT in s for s in states.values())

            try:
                wait_until(final_delivered, timeout=120, interval=0.5)
            except AssertionError:
                raise AssertionError(logs(stack.workdir)) from None

            jobs = _jobs(stack, series_uid)
            current = [j for j in jobs if j.superseded_at is None]
            assert len(current) == 1, [(j.id, j.state, j.superseded_at) for j in jobs]
            final = current[0]
            full_key = input_key(sop_uids, final.model_name, final.model_version)
            assert final.state is JobState.SUCCEEDED, (final.state, final.error)
            assert final.input_key == full_key  # every one of the 80 slices
            assert _stored_sops(stack, series_uid) == set(sop_uids)
            partial = [j for j in jobs if j.id != final.id]
            states = _deliveries(stack, [j.id for j in jobs])
            for job in partial:
                assert job.input_key != full_key
                assert job.superseded_at is not None
                assert DeliveryState.SENT not in states[job.id], (job.id, states[job.id])
                assert job.state in (JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED)
            assert len(partial) == (1 if late else 0)
            if late:
                assert partial[0].state is JobState.CANCELLED, partial[0].state
            assert DeliveryState.SENT in states[final.id]
            assert receiver.received  # the whole series' result reached the PACS
            logger.info(
                "stored before the kill: %d/%d; storescu runs after the restart: %d; "
                "jobs on the partial series: %s",
                stored_before,
                slices,
                runs,
                [(j.state.value, [d.value for d in states[j.id]]) for j in partial],
            )
    finally:
        receiver.close()


def test_a_half_open_flood_from_three_sources_does_not_stop_another_sources_series(
    tmp_path: Path,
) -> None:
    """Three sources (127.0.0.2-4) each keep 16 half-sent A-ASSOCIATE-RQs open, reopening
    those refused or dropped (issue 30 item 2: two such sources locked every sender out),
    while storescu (127.0.0.1, never seen before) sends a 40-slice series with the shipped
    limits: it is stored whole on its first run and gets its job."""
    slices = 40
    folder = tmp_path / "send"
    sop_uids = write_series(folder, slices, announce=True)
    series_uid = str(pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID)
    env = {"MEDSEG_SERIES_QUIET_SECONDS": "60"}
    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with running_stack(tmp_path / "stack", env, postgres=False, worker=False) as stack:
        with half_open_flood(stack.port, sources, per_source=16, seconds=60) as flood:
            time.sleep(0.5)
            started = time.monotonic()
            runs = send_until_whole(stack.port, folder, timeout=40)
            took = time.monotonic() - started
            opened = flood.opened
        wait_until(lambda: len(_jobs(stack, series_uid)) == 1, timeout=20, interval=0.2)
        assert runs == 1, "the transfer failed during the flood"
        assert opened >= 3 * 16
        assert took < 30
        assert _stored_sops(stack, series_uid) == set(sop_uids)
        logger.info("40 slices in %.1f s during the flood (%d connections opened)", took, opened)


def test_postgres_restarted_mid_batch_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    """``MEDSEG_BATCH_INDEX=true`` on a private PostgreSQL crashed (immediate stop) and
    started again while storescu sends 60 slices: once it is back every stored file has its
    row, every sent instance is stored, and the series has exactly one job."""
    slices = 60
    folder = tmp_path / "send"
    sop_uids = write_series(folder, slices, announce=True)
    series_uid = str(pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID)
    env = {"MEDSEG_SERIES_QUIET_SECONDS": "60", "MEDSEG_BATCH_INDEX": "true"}
    with running_stack(tmp_path / "stack", env, postgres=True, worker=False) as stack:
        assert stack.postgres is not None
        restarted = threading.Event()
        runs: list[int] = []

        def send() -> None:
            runs.append(send_until_whole(stack.port, folder, timeout=60))

        sender = threading.Thread(target=send, name="storescu")
        sender.start()
        try:
            wait_until(lambda: len(stack.incoming_files()) >= 15, timeout=30)
            at_crash = len(stack.incoming_files())
            stack.postgres.crash()
            time.sleep(1.5)
            at_restart = len(stack.incoming_files())
            stack.postgres.start()
            restarted.set()
        finally:
            sender.join(90)
        assert restarted.is_set() and runs, logs(stack.workdir)
        stored_mid_crash = len(stack.incoming_files())

        def recorded() -> bool:
            try:
                with stack.session_factory() as session:
                    paths = set(session.scalars(select(Instance.path)).all())
            except Exception:  # the pool may still hold connections from before the crash
                return False
            return {str(p) for p in stack.incoming_files()} <= paths and len(paths) >= slices

        try:
            wait_until(recorded, timeout=30, interval=0.5)
            wait_until(lambda: len(_jobs(stack, series_uid)) >= 1, timeout=20, interval=0.5)
        except AssertionError:
            raise AssertionError(logs(stack.workdir)) from None
        time.sleep(1.0)  # a second completion would come within a few polls
        assert _stored_sops(stack, series_uid) == set(sop_uids)
        jobs = _jobs(stack, series_uid)
        assert len(jobs) == 1, [(j.id, j.state, j.superseded_at) for j in jobs]
        assert jobs[0].input_key == input_key(sop_uids, jobs[0].model_name, jobs[0].model_version)
        assert stored_mid_crash >= slices
        assert not (stack.data_dir / "incoming" / ".rejected").exists()
        logger.info(
            "files at the crash: %d, when PostgreSQL was started again: %d, of %d; "
            "storescu runs: %d",
            at_crash,
            at_restart,
            slices,
            runs[0],
        )
