"""Issue 18 item 1: with ``MEDSEG_BATCH_INDEX`` on PostgreSQL, one row the database refuses
(a value too long for its column) never blocks the batch, nor the gateway's start."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from pydicom import config, dcmread
from pynetdicom import AE
from sqlalchemy import func, make_url, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance
from db.session import make_engine, make_session_factory
from dicom_gateway import statuses
from dicom_gateway.indexer import IndexQueue
from dicom_gateway.server import start_gateway
from dicom_gateway.storage import REJECTED_DIR
from tests.conftest import fresh_postgres_database
from tests.support.factories import chest_series, instance_record, minimal_image
from tests.support.gateway import COUNTED_QUIET_SECONDS, RecordingPublisher
from tests.support.proxy import SwitchableProxy
from tests.support.tools import wait_until
from worker.core.settings import Settings
from worker.devtools.localstack import free_port, start_medseg, stop, wait_for_port

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:The value length")]

CT = "1.2.840.10008.5.1.4.1.1.2"
LONG_UID = "1.2." + "6" * 62 + ".1"
_wait = partial(wait_until, timeout=20.0)


@pytest.fixture
def own_postgres(postgres_url: str) -> Iterator[str]:
    """A database of this test's own (a gateway's monitor sees every row in its database)."""
    with fresh_postgres_database("medseg_batch") as url:
        yield url


@pytest.fixture
def factory(own_postgres: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(own_postgres)
    yield make_session_factory(engine)
    engine.dispose()


def _count(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(Instance)) or 0)


def test_a_refused_row_is_recorded_bare_and_never_set_aside(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A row the database refuses for a descriptive value (one ``instance_info`` would have
    made fit) is recorded bare; one refused even bare (a UID the C-STORE would have refused)
    keeps its file where it is. The rest of the batch is recorded; nothing is set aside."""
    kept = tmp_path / "1.2" / "1.2.3" / "bad.dcm"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"x")
    index = IndexQueue(factory, tmp_path)
    good = [instance_record("1.2.3", f"1.2.3.{i}", path=f"/x/{i}", study="1.2") for i in range(6)]
    index.submit(good[0])
    index.submit(replace(good[1], study_uid=LONG_UID, series_uid="1.2.4", path=str(kept)))
    index.submit(replace(good[2], instance_number=999999999999, patient_id="P1"))
    for info in good[3:]:
        index.submit(info)
    index.flush()  # does not raise
    assert _count(factory) == 5
    assert index.pending() == 0 and index.bare == 1 and index.unrecorded == 1
    with factory() as session:
        bare = session.scalars(select(Instance).where(Instance.sop_instance_uid == "1.2.3.2")).one()
        assert bare.instance_number is None and bare.path == "/x/2"
    assert kept.exists() and not (tmp_path / REJECTED_DIR).exists()


def test_gateway_refuses_the_long_uid_and_records_the_next_series_and_restarts(
    own_postgres: str,
    factory: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.IGNORE)
    settings = settings.model_copy(update={"database_url": own_postgres, "batch_index": True})
    publisher = RecordingPublisher()
    server, monitor = start_gateway(settings, publish=publisher)
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        bad = minimal_image(CT, "CT")
        bad.StudyInstanceUID = LONG_UID
        assert assoc.send_c_store(bad).Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
        paths = chest_series(tmp_path / "src", 0, slices=40)
        assert all(assoc.send_c_store(p).Status == statuses.SUCCESS for p in paths)
        assoc.release()
        _wait(lambda: _count(factory) == 40)
        _wait(lambda: len(publisher.sent) == 1)
    finally:
        server.shutdown()
        monitor.stop()

    # A poisoned file found on disk at start (written before this fix, or by hand) is set
    # aside; the gateway starts and records what else is there.
    stored = next(settings.incoming_dir.rglob("*.dcm"))
    ds = dcmread(stored)
    ds.StudyInstanceUID = LONG_UID
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    poisoned = settings.incoming_dir / "poison" / "series" / "1.2.3.4.5.6.7.8.9.dcm"
    poisoned.parent.mkdir(parents=True)
    ds.save_as(poisoned, enforce_file_format=True)
    server, monitor = start_gateway(settings, publish=publisher)
    try:
        assert (settings.incoming_dir / REJECTED_DIR / "poison" / "series").is_dir()
        assert _count(factory) == 40
    finally:
        server.shutdown()
        monitor.stop()


def _job_instance_counts(factory: sessionmaker[Session]) -> dict[str, int]:
    from db.models import Job, Series

    with factory() as session:
        rows = session.execute(
            select(Series.series_instance_uid, func.count(Instance.id))
            .join(Instance, Instance.series_id == Series.id)
            .join(Job, Job.series_id == Series.id)
            .group_by(Series.series_instance_uid)
        ).all()
    return {uid: int(count) for uid, count in rows}


@pytest.mark.parametrize("batch_index", [True, False], ids=["batch", "per-store"])
def test_integers_too_large_for_the_database_are_recorded_empty_never_set_aside(
    own_postgres: str,
    factory: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
    batch_index: bool,
) -> None:
    """Issue 30 item 1: legal IS values over PostgreSQL's INTEGER (InstanceNumber
    999999999999, Images in Acquisition 2147483648) were answered 0000 and then set aside
    (batch index), or answered A700 forever (per C-STORE). Now: 0000, recorded, the value
    stored as empty with a warning, one job on every instance."""
    update = {
        "database_url": own_postgres,
        "batch_index": batch_index,
        "series_quiet_seconds": COUNTED_QUIET_SECONDS,
    }
    settings = settings.model_copy(update=update)
    publisher = RecordingPublisher()
    server, monitor = start_gateway(settings, publish=publisher)
    series_uids = []
    try:
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        assert assoc.is_established
        for seed, keyword, value in [
            (1, "ImagesInAcquisition", "2147483648"),
            (2, "InstanceNumber", "999999999999"),
            (3, "ImagesInAcquisition", "-3"),
        ]:
            paths = chest_series(tmp_path / f"src{seed}", seed, slices=10)
            for i, path in enumerate(paths):
                ds = dcmread(path)
                if keyword == "ImagesInAcquisition" or i == 4:
                    setattr(ds, keyword, value)
                assert assoc.send_c_store(ds).Status == statuses.SUCCESS
            series_uids.append(str(ds.SeriesInstanceUID))
        assoc.release()
        _wait(lambda: _count(factory) == 30)
        _wait(lambda: len(publisher.sent) == 3)
        assert _job_instance_counts(factory) == dict.fromkeys(series_uids, 10)
        assert not (settings.incoming_dir / REJECTED_DIR).exists()
    finally:
        server.shutdown()
        monitor.stop()


def test_the_gateway_starts_and_receives_while_the_database_is_down(
    own_postgres: str, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Issue 30 item 5: with the batch index (the default) ``medseg gateway`` exited
    "database unreachable" when started during a database outage. Now it starts, receives,
    and records every acknowledged instance (those received before a restart too) once the
    database is back."""
    proxy = SwitchableProxy(free_port(), make_url(own_postgres).port or 5432)
    url = make_url(own_postgres).set(host="127.0.0.1", port=proxy.port)
    port = free_port()
    env = {
        "MEDSEG_DATA_DIR": str(tmp_path / "data"),
        "MEDSEG_DATABASE_URL": url.render_as_string(hide_password=False),
        "MEDSEG_HOST": "127.0.0.1",
        "MEDSEG_PORT": str(port),
        "MEDSEG_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "MEDSEG_MIN_FREE_BYTES": "0",
        "MEDSEG_SERIES_QUIET_SECONDS": "3600",
    }
    paths = chest_series(tmp_path / "src", 0, slices=10)
    settings = Settings(port=port)
    gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log")
    try:
        wait_for_port(port, timeout=60, process=gateway)  # the database is down
        _store_all(settings, paths[:6])
        gateway.kill()  # restarted during the outage: the 6 rows were only in its memory
        gateway.wait(10)
        gateway = start_medseg(["gateway"], env, tmp_path / "gateway.log", append=True)
        wait_for_port(port, timeout=60, process=gateway)
        _store_all(settings, paths[6:])
        assert _count(factory) == 0
        proxy.up()  # the database is back
        _wait(lambda: _count(factory) == 10)
        assert not (tmp_path / "data" / "incoming" / REJECTED_DIR).exists()
    finally:
        stop(gateway)
        proxy.down()
    log = (tmp_path / "gateway.log").read_text()
    assert "database unreachable at start" in log


def _store_all(settings: Settings, paths: list[Path]) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    assert all(assoc.send_c_store(p).Status == statuses.SUCCESS for p in paths)
    assoc.release()
