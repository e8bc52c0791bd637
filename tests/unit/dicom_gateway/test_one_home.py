"""Issue 30 item 3: one SOP Instance UID resent under another Series Instance UID has one
home. The old file was left behind; each restart's recovery recorded it again, moving the
instance back and forth, and the series it left kept a queued job."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, JobState, Series
from dicom_gateway import statuses
from dicom_gateway.indexer import reconcile
from dicom_gateway.records import record_instance
from dicom_gateway.server import start_gateway
from tests.support.factories import chest_series, instance_record
from tests.support.gateway import COUNTED_QUIET_SECONDS, RecordingPublisher
from tests.support.tools import wait_until
from worker.core.settings import Settings

CT = "1.2.840.10008.5.1.4.1.1.2"


def _send(settings: Settings, datasets: list[object]) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == statuses.SUCCESS
    assoc.release()


def _homes(factory: sessionmaker[Session]) -> dict[str, tuple[str, str]]:
    with factory() as session:
        rows = session.execute(
            select(Instance.sop_instance_uid, Series.series_instance_uid, Instance.path).join(
                Series, Series.id == Instance.series_id
            )
        ).all()
    return {sop: (series, path) for sop, series, path in rows}


def _live_jobs(factory: sessionmaker[Session]) -> dict[str, list[JobState]]:
    with factory() as session:
        rows = session.execute(
            select(Series.series_instance_uid, Job.state)
            .join(Job, Job.series_id == Series.id)
            .where(Job.state.in_([JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]))
        ).all()
    jobs: dict[str, list[JobState]] = {}
    for uid, state in rows:
        jobs.setdefault(uid, []).append(state)
    return jobs


def test_an_instance_resent_under_another_series_stays_there_across_restarts(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    paths = chest_series(tmp_path / "src", 0, slices=4)
    first = [dcmread(p) for p in paths]
    old_series = str(first[0].SeriesInstanceUID)
    moved = dcmread(paths[0])
    moved.SeriesInstanceUID = new_series = "1.2.826.0.1.3680043.99.30.3"
    settings = settings.model_copy(update={"series_quiet_seconds": COUNTED_QUIET_SECONDS})
    publisher = RecordingPublisher()
    server, monitor = start_gateway(settings, publish=publisher)
    try:
        _send(settings, first)
        wait_until(lambda: len(publisher.sent) == 1, timeout=10)  # the old series' job
        _send(settings, [moved])
        wait_until(lambda: len(publisher.sent) >= 2, timeout=10)  # the new series' job
    finally:
        server.shutdown()
        monitor.stop()
    sop = str(moved.SOPInstanceUID)
    homes = _homes(session_factory)
    assert homes[sop][0] == new_series
    files = [p for p in settings.incoming_dir.rglob(f"{sop}.dcm")]
    assert [str(p) for p in files] == [homes[sop][1]], "the old copy was left behind"

    for _ in range(2):  # each restart recovered the old file, moving the instance back
        server, monitor = start_gateway(settings, publish=publisher)
        server.shutdown()
        monitor.stop()
        assert _homes(session_factory)[sop][0] == new_series
    # The series it left: its job on the 4 instances is superseded (cancelled while queued).
    assert new_series in _live_jobs(session_factory)
    with session_factory() as session:
        old_jobs = session.scalars(
            select(Job).join(Series).where(Series.series_instance_uid == old_series)
        ).all()
    assert old_jobs[0].superseded_at is not None
    assert old_jobs[0].state is JobState.CANCELLED


def _two_copies(root: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The same SOP Instance under series 1.2.3 (older file) and 1.2.4 (newer file)."""
    old = root / "1.2" / "1.2.3" / "1.2.3.9.dcm"
    new = root / "1.2" / "1.2.4" / "1.2.3.9.dcm"
    for path, series in ((old, "1.2.3"), (new, "1.2.4")):
        path.parent.mkdir(parents=True)
        ds = dcmread(chest_series(tmp_path / series, 0, slices=1)[0])
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2", series, "1.2.3.9"
        ds.save_as(path, enforce_file_format=True)
    os.utime(old, (1_000_000, 1_000_000))
    return old, new


@pytest.mark.parametrize("recorded", ["newer", "older"])
def test_recovery_keeps_the_newer_copy_and_removes_the_stale_one(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path, recorded: str
) -> None:
    """At start, of two copies of one instance the newer wins: a stale copy left by an
    older release (or a crash between the commit and its removal) is removed; a newer copy
    without a row (acknowledged, its row lost in a crash) is recorded and the old one removed."""
    old, new = _two_copies(settings.incoming_dir, tmp_path)
    row = new if recorded == "newer" else old
    series = "1.2.4" if recorded == "newer" else "1.2.3"
    record_instance(session_factory, instance_record(series, "1.2.3.9", str(row), study="1.2"))
    reconcile(session_factory, settings.incoming_dir)
    assert not old.exists() and new.exists()
    assert _homes(session_factory)["1.2.3.9"] == ("1.2.4", str(new))
    reconcile(session_factory, settings.incoming_dir)  # and it stays so
    assert _homes(session_factory)["1.2.3.9"] == ("1.2.4", str(new))


def test_only_files_under_the_storage_root_are_ever_removed(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A row may name any path (a test's ``/dev/null``, one written by hand): an instance
    moving away from it never removes a file outside the storage root."""
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(b"keep me")
    root = settings.incoming_dir
    inside = root / "1.2" / "1.2.4" / "1.2.3.9.dcm"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"new")
    record_instance(session_factory, instance_record("1.2.3", "1.2.3.9", str(outside)), root)
    record_instance(session_factory, instance_record("1.2.4", "1.2.3.9", str(inside)), root)
    assert outside.read_bytes() == b"keep me"
    record_instance(session_factory, instance_record("1.2.3", "1.2.3.9", "/dev/null"))
    record_instance(session_factory, instance_record("1.2.4", "1.2.3.9", str(inside)))
    assert Path("/dev/null").is_char_device()
