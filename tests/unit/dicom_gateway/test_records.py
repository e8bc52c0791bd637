"""Batched recording (``upsert_instances``) gives the rows one-by-one recording gives."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Series, SeriesStatus, Study, utcnow
from dicom_gateway.records import InstanceInfo, record_instance, upsert_instances
from tests.support.factories import instance_record


def _info(series: str, sop: str, path: str = "/x") -> InstanceInfo:
    return instance_record(series, sop, path)


def test_batch_creates_updates_and_reopens_like_single_records(
    session_factory: sessionmaker[Session],
) -> None:
    record_instance(session_factory, _info("1.2.3.1", "1.2.3.1.1", "/old"))
    with session_factory.begin() as session:
        session.scalars(select(Series)).one().status = SeriesStatus.COMPLETE

    batch = [
        _info("1.2.3.1", "1.2.3.1.1", "/new"),  # known instance: replaced
        _info("1.2.3.1", "1.2.3.1.2"),
        _info("1.2.3.2", "1.2.3.2.1"),  # new series in the same study
        _info("1.2.3.2", "1.2.3.2.2", "/first"),
        _info("1.2.3.2", "1.2.3.2.2", "/second"),  # twice in one batch: last wins
    ]
    with session_factory.begin() as session:
        upsert_instances(session, batch, utcnow())

    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        series = {s.series_instance_uid: s for s in session.scalars(select(Series))}
        assert series["1.2.3.1"].status is SeriesStatus.RECEIVING  # reopened
        rows = {i.sop_instance_uid: i for i in session.scalars(select(Instance))}
        assert sorted(rows) == ["1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1", "1.2.3.2.2"]
        assert rows["1.2.3.1.1"].path == "/new"
        assert rows["1.2.3.2.2"].path == "/second"
        assert rows["1.2.3.2.1"].series_id == series["1.2.3.2"].id


def test_the_study_keeps_its_patient_id_for_the_study_browser(
    session_factory: sessionmaker[Session],
) -> None:
    from pydicom.uid import ExplicitVRLittleEndian

    from dicom_gateway.records import instance_info
    from tests.support.factories import minimal_image

    ds = minimal_image("1.2.840.10008.5.1.4.1.1.2", "CT")
    ds.PatientID, ds.AccessionNumber, ds.StudyDate = "PID-55", "ACC55", "20261130"
    info = instance_info(
        ds, transfer_syntax_uid=ExplicitVRLittleEndian, calling_ae="CT1", path="/x", size_bytes=1
    )
    record_instance(session_factory, info)
    without = minimal_image("1.2.840.10008.5.1.4.1.1.2", "CT")
    del without.PatientID  # none sent: None, not ""
    record_instance(
        session_factory,
        instance_info(
            without,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            calling_ae="CT1",
            path="/y",
            size_bytes=1,
        ),
    )
    with session_factory() as session:
        rows = {s.study_instance_uid: s for s in session.scalars(select(Study))}
    assert rows[str(ds.StudyInstanceUID)].patient_id == "PID-55"
    assert rows[str(ds.StudyInstanceUID)].accession_number == "ACC55"
    assert rows[str(without.StudyInstanceUID)].patient_id is None
