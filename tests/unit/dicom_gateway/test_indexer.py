"""MEDSEG_BATCH_INDEX: rows written in batches by the monitor, and nothing acknowledged is lost
when the gateway is killed before writing them (reconcile on the next start)."""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import pydicom
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Instance, Job, Series, SeriesStatus
from db.session import make_engine, make_session_factory
from dicom_gateway.indexer import IndexQueue, reconcile
from dicom_gateway.records import instance_info
from dicom_gateway.server import start_gateway
from tests.support.factories import chest_series
from tests.support.gateway import COUNTED_QUIET_SECONDS
from tests.support.tools import need_tool, wait_until
from worker.core.settings import Settings
from worker.devtools.localstack import free_port, start_medseg, stop, storescu, wait_for_port


def _count(session_factory: sessionmaker[Session], what: type) -> int:
    with session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(what)) or 0)


_wait = partial(wait_until, timeout=20.0)


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def __call__(self, task: str, job_id: int, queue: str, model: str | None = None) -> str:
        self.sent.append(job_id)
        return f"task-{job_id}"


def test_batched_rows_follow_the_files_and_the_series_completes_once(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    need_tool("storescu")
    update = {
        "batch_index": True,
        "completion_poll_seconds": 0.3,
        "series_quiet_seconds": COUNTED_QUIET_SECONDS,
    }
    settings = settings.model_copy(update=update)
    publisher = _Publisher()
    server, monitor = start_gateway(settings, publish=publisher)
    try:
        chest_series(tmp_path / "src", 0, slices=12)
        done = storescu(tmp_path / "src", settings.port, "MEDSEG")
        assert done.returncode == 0, done.stderr
        assert len(list(settings.incoming_dir.rglob("*.dcm"))) == 12
        _wait(lambda: _count(session_factory, Instance) == 12)
        _wait(lambda: len(publisher.sent) == 1)
    finally:
        server.shutdown()
        monitor.stop()
    with session_factory() as session:
        series = session.scalars(select(Series)).one()
        assert series.status is SeriesStatus.COMPLETE
        assert series.calling_ae == "STORESCU"
        assert _count(session_factory, Job) == 1
        stored = pydicom.dcmread(session.scalars(select(Instance.path)).first())
    # The file meta names who sent it, so a file recorded after a crash keeps its sender.
    assert stored.file_meta.SendingApplicationEntityTitle == "STORESCU"


def test_a_killed_gateway_loses_no_acknowledged_instance(tmp_path: Path) -> None:
    need_tool("storescu")
    data = tmp_path / "data"
    url = f"sqlite:///{data / 'medseg.db'}"
    upgrade(url)
    port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(data),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(port),
        "MEDSEG_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_BATCH_INDEX": "true",
        "MEDSEG_SERIES_QUIET_SECONDS": "3600",
        # No poll before the kill: every row is still only in the gateway's memory.
        "MEDSEG_COMPLETION_POLL_SECONDS": "3600",
    }
    sessions = make_session_factory(make_engine(url))
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway1.log")
    try:
        wait_for_port(port, process=gateway)
        chest_series(tmp_path / "src", 1, slices=10)
        done = storescu(tmp_path / "src", port, "MEDSEG", "CT7")
        assert done.returncode == 0, done.stderr  # every instance acknowledged
        os.kill(gateway.pid, signal.SIGKILL)
        gateway.wait(10)
    finally:
        stop(gateway)
    assert len(list((data / "incoming").rglob("*.dcm"))) == 10
    assert _count(sessions, Instance) == 0  # the crash came before any batch was written

    gateway = start_medseg(["gateway"], env, tmp_path / "gateway2.log")
    try:
        wait_for_port(port, process=gateway)  # reconcile runs before the port opens
        assert _count(sessions, Instance) == 10
    finally:
        stop(gateway)
    with sessions() as session:
        series = session.scalars(select(Series)).one()
        assert series.calling_ae == "CT7"
        paths = set(session.scalars(select(Instance.path)))
    assert paths == {str(p) for p in (data / "incoming").rglob("*.dcm")}
    assert "reconciled 10 stored instance(s)" in (tmp_path / "gateway2.log").read_text()


def test_database_down_keeps_rows_queued_until_it_is_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    engine = make_engine(url)
    index = IndexQueue(make_session_factory(engine))  # no tables yet: every write fails
    paths = chest_series(tmp_path / "src", 2, slices=3)
    for path in paths:
        ds = pydicom.dcmread(path)
        index.submit(
            instance_info(
                ds,
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                calling_ae="CT1",
                path=str(path),
                size_bytes=path.stat().st_size,
            )
        )
    try:
        index.flush()
        raise AssertionError("flush must fail while the database is unusable")
    except Exception as exc:
        assert "OperationalError" in type(exc).__name__
    assert index.pending() == 3
    upgrade(url)  # the database is back
    assert index.flush() == 3
    assert index.pending() == 0
    assert _count(make_session_factory(engine), Instance) == 3
    # Reconcile finds nothing more to do for these files (their rows exist).
    assert reconcile(make_session_factory(engine), tmp_path / "src") == 0
    engine.dispose()
