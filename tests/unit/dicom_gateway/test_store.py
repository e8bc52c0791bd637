"""The store handler over real loopback associations (pynetdicom SCU → our SCP), on both
receive paths: the lean one (``dicom_gateway/_fastpath``, ``MEDSEG_FAST_RECEIVE=true``) and
pynetdicom's own (``false``)."""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts, build_context
from pynetdicom.sop_class import RTPlanStorage, Verification
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, JobState, Series, SeriesStatus, Study
from dicom_gateway import statuses
from dicom_gateway.server import start_gateway
from tests.support.factories import chest_series, file_with_meta, minimal_image
from tests.support.gateway import COUNTED_QUIET_SECONDS, RecordingPublisher, wait_for_instances
from tests.support.tools import wait_until
from worker.core.routing import route
from worker.core.settings import Settings
from worker.core.tags import SeriesTags
from worker.devtools.localstack import free_port

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture(params=[True, False], ids=["fast", "pynetdicom"])
def gateway(
    request: pytest.FixtureRequest,
    settings: Settings,
    session_factory: sessionmaker[Session],
    publisher: RecordingPublisher,
) -> Iterator[Settings]:
    # The defaults (lean receive path, batched rows), and pynetdicom's path with one DB
    # transaction per C-STORE: both ways of recording, both receive paths. These tests
    # count jobs, so the quiet period is COUNTED_QUIET_SECONDS.
    update = {
        "port": free_port(),
        "fast_receive": request.param,
        "batch_index": request.param,
        "series_quiet_seconds": COUNTED_QUIET_SECONDS,
    }
    settings = settings.model_copy(update=update)
    server, monitor = start_gateway(settings, publish=publisher)
    yield settings
    server.shutdown()
    monitor.stop()


def _associate(settings: Settings, contexts: list | None = None):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="TESTSCU")
    ae.requested_contexts = contexts or [
        *StoragePresentationContexts[:100],
        build_context(Verification),
    ]
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    return assoc


_wait = partial(wait_until, timeout=10.0)


def test_echo(gateway: Settings) -> None:
    assoc = _associate(gateway)
    assert assoc.send_c_echo().Status == statuses.SUCCESS
    assoc.release()


def test_series_is_stored_recorded_completed_and_enqueued_once(
    gateway: Settings,
    session_factory: sessionmaker[Session],
    publisher: RecordingPublisher,
    tmp_path: Path,
) -> None:
    paths = chest_series(tmp_path / "src", 0, slices=8)
    assoc = _associate(gateway)
    for path in paths:
        assert assoc.send_c_store(path).Status == statuses.SUCCESS
    assoc.release()

    wait_for_instances(session_factory, 8)
    with session_factory() as session:
        instances = session.scalars(select(Instance)).all()
        assert len(instances) == 8
        for instance in instances:
            stored = Path(instance.path)
            assert stored.is_relative_to(gateway.incoming_dir)
            # Written as received: the same bytes as the source data set, no re-encoding.
            original = next(
                p for p in paths if pydicom.dcmread(p).SOPInstanceUID == instance.sop_instance_uid
            )
            assert pydicom.dcmread(stored).PixelData == pydicom.dcmread(original).PixelData
        assert (
            session.scalar(select(Study.study_instance_uid))
            == pydicom.dcmread(paths[0]).StudyInstanceUID
        )

    _wait(lambda: len(publisher.sent) == 1)
    time.sleep(3 * gateway.completion_poll_seconds)  # and no second job later
    with session_factory() as session:
        series = session.scalars(select(Series)).one()
        jobs = session.scalars(select(Job)).all()
    assert series.status is SeriesStatus.COMPLETE
    expected = route(SeriesTags.of(modality="CT", body_part_examined="CHEST"))
    assert expected is not None
    assert [(j.model_name, j.queue, j.state) for j in jobs] == [
        (expected.name, expected.queue, JobState.QUEUED)
    ]
    assert publisher.sent == [(jobs[0].id, expected.queue)]
    assert jobs[0].enqueued_at is not None


def test_broker_outage_keeps_the_job_in_the_outbox(
    gateway: Settings,
    session_factory: sessionmaker[Session],
    publisher: RecordingPublisher,
    tmp_path: Path,
) -> None:
    publisher.down = True
    assoc = _associate(gateway)
    for path in chest_series(tmp_path / "src", 1, slices=4):
        assert assoc.send_c_store(path).Status == statuses.SUCCESS
    assoc.release()
    _wait(lambda: _job_count(session_factory) == 1)
    time.sleep(0.5)
    assert publisher.sent == []
    publisher.down = False
    _wait(lambda: len(publisher.sent) == 1)


def _job_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return len(session.scalars(select(Job)).all())


def test_unsupported_sop_class_is_refused_with_0122(gateway: Settings) -> None:
    ds = minimal_image(RTPlanStorage, "RTPLAN", with_pixels=False)
    assoc = _associate(gateway, [build_context(RTPlanStorage)])
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == statuses.SOP_CLASS_NOT_SUPPORTED
    assert "not processed" in status.ErrorComment


def test_image_without_pixel_data_is_refused_with_a900(gateway: Settings) -> None:
    assoc = _associate(gateway)
    status = assoc.send_c_store(minimal_image(CT, "CT", with_pixels=False))
    assoc.release()
    assert status.Status == statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "pixel" in status.ErrorComment


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe\x00\x01" * 64 + b"not dicom",
        b"\x08\x00\x16\x00\xff\xff\xff\x7f",  # a tag claiming 2 GiB of value
        b"\x08\x00\x16\x00UI\x1a\x001.2.840.10008.5.1.4.",  # truncated mid-value
    ],
)
def test_bytes_that_are_not_a_data_set_get_a_failure_status(
    gateway: Settings,
    session_factory: sessionmaker[Session],
    payload: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pynetdicom import _config

    # Send the file's bytes after its meta header as they are, without pydicom in between.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    path = file_with_meta(tmp_path / "bad.dcm", CT, payload)
    assoc = _associate(gateway)
    status = assoc.send_c_store(path).Status
    # The gateway is still up and answering on the same association.
    assert assoc.send_c_echo().Status == statuses.SUCCESS
    assoc.release()
    assert status in (statuses.CANNOT_DECODE, statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    assert _job_count(session_factory) == 0
    assert not any(gateway.incoming_dir.rglob("*.dcm"))


def test_full_disk_answers_out_of_resources(
    gateway: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_space(path: Path, data: bytes, sync: bool = True) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dicom_gateway.handlers.write_atomic", no_space)
    assoc = _associate(gateway)
    status = assoc.send_c_store(chest_series(tmp_path, 0, slices=2)[0])
    assoc.release()
    assert status.Status == statuses.OUT_OF_RESOURCES
    assert status.ErrorComment == "disk full"


def _store_one_with(settings: Settings, tmp_path: Path, **update: object) -> tuple[Settings, Any]:
    """Send one CT instance to a gateway started with ``update`` applied to ``settings``."""
    settings = settings.model_copy(update={"port": free_port(), **update})
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    try:
        assoc = _associate(settings)
        status = assoc.send_c_store(chest_series(tmp_path, 0, slices=2)[0])
        assoc.release()
    finally:
        server.shutdown()
        monitor.stop()
    return settings, status


def test_free_space_threshold_refuses_before_writing(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings, status = _store_one_with(settings, tmp_path, min_free_bytes=1 << 62)
    assert status.Status == statuses.OUT_OF_RESOURCES
    assert not any(settings.incoming_dir.rglob("*.dcm"))


def test_database_down_keeps_the_file_and_asks_for_a_resend(
    settings: Settings, tmp_path: Path
) -> None:
    # One DB transaction per C-STORE: the row is part of the answer (with the batch index the
    # file is acknowledged and its row waits: tests/unit/dicom_gateway/test_indexer.py).
    settings, status = _store_one_with(
        settings,
        tmp_path,
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        batch_index=False,
    )
    assert status.Status == statuses.OUT_OF_RESOURCES
    assert status.ErrorComment == "database unavailable"
    assert len(list(settings.incoming_dir.rglob("*.dcm"))) == 1


@pytest.mark.parametrize(
    "syntax",
    [
        "1.2.840.10008.1.2.5",  # RLE Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    ],
)
def test_compressed_instances_are_stored_as_received_and_decodable(
    gateway: Settings, session_factory: sessionmaker[Session], tmp_path: Path, syntax: str
) -> None:
    from pydicom.uid import UID

    from worker.pipeline.loading import load_series

    sources = chest_series(tmp_path / "src", 0, slices=3)
    expected = [pydicom.dcmread(p).pixel_array for p in sources]
    compressed = []
    for path in sources:
        ds = pydicom.dcmread(path)
        ds.compress(UID(syntax))
        compressed.append(ds)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CT, [syntax])
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title=gateway.ae_title)
    assert assoc.is_established
    for ds in compressed:
        assert assoc.send_c_store(ds).Status == statuses.SUCCESS
    assoc.release()

    wait_for_instances(session_factory, len(compressed))
    with session_factory() as session:
        stored = session.scalars(select(Instance)).all()
    assert {i.transfer_syntax_uid for i in stored} == {syntax}
    by_uid = {ds.SOPInstanceUID: ds for ds in compressed}
    for instance in stored:
        on_disk = pydicom.dcmread(instance.path)
        assert on_disk.file_meta.TransferSyntaxUID == syntax
        assert on_disk.PixelData == by_uid[instance.sop_instance_uid].PixelData  # not re-encoded
    series = load_series([Path(i.path) for i in stored])
    for frame, original in zip(series.frames, expected, strict=True):
        assert (frame == original).all()


def test_unknown_calling_ae_is_rejected_and_logged(
    settings: Settings,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings.model_copy(
        update={"port": free_port(), "allowed_calling_aes": ["CT_SCANNER"]}
    )
    server, monitor = start_gateway(settings, publish=RecordingPublisher())
    try:
        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(Verification)
        assoc = stranger.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        assert assoc.is_rejected
        known = AE(ae_title="CT_SCANNER")
        known.add_requested_context(Verification)
        assoc = known.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        assert assoc.is_established
        assoc.release()
    finally:
        server.shutdown()
        monitor.stop()
    assert any(
        "EVT_REJECTED" in r.getMessage() and "STRANGER" in r.getMessage() for r in caplog.records
    )


def test_a_resent_series_does_not_run_again_but_a_grown_one_does(
    gateway: Settings,
    session_factory: sessionmaker[Session],
    publisher: RecordingPublisher,
    tmp_path: Path,
) -> None:
    paths = chest_series(tmp_path / "src", 2, slices=6)
    for batch in (paths[:5], paths[:5]):  # the same five instances, twice
        assoc = _associate(gateway)
        for path in batch:
            assert assoc.send_c_store(path).Status == statuses.SUCCESS
        assoc.release()
        # Past the quiet period first: after the second batch the series may still read
        # COMPLETE from the first, before the re-sent instances reopen it.
        time.sleep(gateway.series_quiet_seconds)
        _wait(lambda: _series_status(session_factory) is SeriesStatus.COMPLETE)
    time.sleep(3 * gateway.completion_poll_seconds)
    assert len(publisher.sent) == 1, "same instances, same model: no second job"

    assoc = _associate(gateway)  # a late sixth instance: a new version of the job
    assert assoc.send_c_store(paths[5]).Status == statuses.SUCCESS
    assoc.release()
    _wait(lambda: len(publisher.sent) == 2)
    with session_factory() as session:
        keys = [j.input_key for j in session.scalars(select(Job).order_by(Job.id))]
    assert len(set(keys)) == 2 and all(k and len(k) == 64 for k in keys)


def _series_status(session_factory: sessionmaker[Session]) -> SeriesStatus:
    with session_factory() as session:
        return session.scalars(select(Series)).one().status


def test_a_series_completes_at_its_announced_image_count_without_waiting(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    publisher = RecordingPublisher()
    settings = settings.model_copy(update={"port": free_port(), "series_quiet_seconds": 3600.0})
    server, monitor = start_gateway(settings, publish=publisher)
    try:
        paths = chest_series(tmp_path / "src", 3, slices=4)
        assoc = _associate(settings)
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.ImagesInAcquisition = 4
            assert assoc.send_c_store(ds).Status == statuses.SUCCESS
        assoc.release()
        _wait(lambda: len(publisher.sent) == 1, timeout=5.0)  # far below the 1 h quiet period
    finally:
        server.shutdown()
        monitor.stop()
    with session_factory() as session:
        series = session.scalars(select(Series)).one()
    assert series.expected_instances == 4 and series.status is SeriesStatus.COMPLETE
    assert series.calling_ae == "TESTSCU" and series.calling_host == "127.0.0.1"


def test_prometheus_metrics_count_instances_associations_and_jobs(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    import urllib.request

    publisher = RecordingPublisher()
    metrics_port = free_port()
    settings = settings.model_copy(update={"port": free_port(), "metrics_port": metrics_port})
    server, monitor = start_gateway(settings, publish=publisher)
    try:
        assoc = _associate(settings)
        for path in chest_series(tmp_path / "src", 4, slices=3):
            assert assoc.send_c_store(path).Status == statuses.SUCCESS
        assert assoc.send_c_store(minimal_image(CT, "CT", with_pixels=False)).Status == (
            statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS
        )
        assoc.release()
        _wait(lambda: len(publisher.sent) == 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        monitor.stop()

    def value(line_start: str) -> float:
        (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
        return float(line.rsplit(" ", 1)[1])

    assert value('medseg_instances_received_total{status="0x0000"}') >= 3
    assert value('medseg_instances_received_total{status="0xA900"}') >= 1
    assert value('medseg_associations_total{outcome="accepted"}') >= 1
    assert value('medseg_jobs{state="queued"}') == 1
    assert value("medseg_series_completion_delay_seconds_count") >= 1
    assert "medseg_store_seconds_bucket" in text
