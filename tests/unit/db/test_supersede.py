"""Issue 18 item 4: a job whose series gains instances after it was made is superseded: a
queued one cancelled, the unsent deliveries of a finished one withheld, a running one's
withheld when it records its result; the series, complete again, gets a new job."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, Job, JobState, Result, Series, SeriesStatus
from db.supersede import WITHHELD_SUPERSEDED
from dicom_gateway.completion import complete_quiet_series
from dicom_gateway.records import record_instance
from tests.support.factories import chest_series, instance_record
from tests.support.jobs import queue_test_job
from worker.core.settings import DicomDestination
from worker.pipeline.cache import ModelCache
from worker.runtime import jobs as worker_jobs
from worker.runtime.jobs import DeliverTo, execute_job

SERIES = "1.2.3.9"


def _finished_job(session_factory: sessionmaker[Session], state: JobState) -> int:
    for sop in ("1.2.3.9.1", "1.2.3.9.2"):
        record_instance(session_factory, instance_record(SERIES, sop))
    complete_quiet_series(session_factory, 0.0, 3)
    with session_factory.begin() as session:
        job = session.scalars(select(Job)).one()
        job.state = state
        session.add(
            Result(
                job=job,
                model_name=job.model_name,
                model_version=job.model_version,
                deliveries=[
                    Delivery(destination="pacs", state=DeliveryState.SENT),
                    Delivery(destination="archive", state=DeliveryState.PENDING),
                ],
            )
        )
        return job.id


def test_a_finished_job_is_superseded_when_its_series_grows_and_a_new_job_follows(
    session_factory: sessionmaker[Session],
) -> None:
    old = _finished_job(session_factory, JobState.SUCCEEDED)
    record_instance(session_factory, instance_record(SERIES, "1.2.3.9.1", "/again"))
    with session_factory() as session:  # a resent instance: the same input, nothing superseded
        assert session.get_one(Job, old).superseded_at is None

    record_instance(session_factory, instance_record(SERIES, "1.2.3.9.3"))
    with session_factory() as session:
        job = session.get_one(Job, old)
        assert job.superseded_at is not None and job.state is JobState.SUCCEEDED
        sent = {d.destination: d for d in job.results[0].deliveries}
        assert sent["pacs"].state is DeliveryState.SENT  # gone already: the new result follows
        assert sent["archive"].state is DeliveryState.WITHHELD
        assert sent["archive"].error == WITHHELD_SUPERSEDED
        assert session.scalars(select(Series)).one().status is SeriesStatus.RECEIVING

    (new,) = complete_quiet_series(session_factory, 0.0, 3)
    with session_factory() as session:
        assert session.get_one(Job, new).superseded_at is None
        assert session.get_one(Job, new).state is JobState.QUEUED


def test_a_queued_job_is_cancelled_when_its_series_grows(
    session_factory: sessionmaker[Session],
) -> None:
    for sop in ("1.2.3.9.1", "1.2.3.9.2"):
        record_instance(session_factory, instance_record(SERIES, sop))
    (queued,) = complete_quiet_series(session_factory, 0.0, 3)
    record_instance(session_factory, instance_record(SERIES, "1.2.3.9.3"))
    with session_factory() as session:
        job = session.get_one(Job, queued)
        assert job.state is JobState.CANCELLED and "superseded" in (job.error or "")
    (new,) = complete_quiet_series(session_factory, 0.0, 3)
    assert new != queued


def test_a_job_whose_series_grows_while_it_runs_records_its_result_withheld(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = chest_series(tmp_path / "in", 0, slices=3)
    job_id = queue_test_job(session_factory, paths[:2])
    series_uid = str(pydicom.dcmread(paths[2], stop_before_pixels=True).SeriesInstanceUID)
    run_series = worker_jobs.run_series

    def run_while_the_rest_arrives(*args: object, **kwargs: object) -> object:
        result = run_series(*args, **kwargs)  # type: ignore[arg-type]
        record_instance(session_factory, instance_record(series_uid, "9.9.9", str(paths[2])))
        return result

    monkeypatch.setattr(worker_jobs, "run_series", run_while_the_rest_arrives)
    pacs = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=1)
    state = execute_job(
        session_factory, ModelCache("cpu"), tmp_path / "r", job_id, DeliverTo([pacs])
    )
    assert state is JobState.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.superseded_at is not None
        (delivery,) = job.results[0].deliveries
        assert delivery.state is DeliveryState.WITHHELD
        assert delivery.error == WITHHELD_SUPERSEDED
