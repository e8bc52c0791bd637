"""The parts whose SQL differs by dialect, run on PostgreSQL: row locks, upserts under races."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import Instance, Job, JobState, Series, Study, utcnow
from db.session import make_engine, make_session_factory
from dicom_gateway.records import InstanceInfo, record_instance
from dicom_gateway.sweeper import sweep
from tests.support.factories import instance_record

pytestmark = pytest.mark.integration


def _info(series: str, sop: str) -> InstanceInfo:
    return instance_record(series, sop, study="1.2.840.99.1")


def test_concurrent_instances_of_one_series_make_one_study_and_series(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    infos = [_info("1.2.840.99.1.1", f"1.2.840.99.1.1.{i}") for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda info: record_instance(factory, info), infos))
    with factory() as session:
        assert (
            len(
                session.scalars(
                    select(Study).where(Study.study_instance_uid == "1.2.840.99.1")
                ).all()
            )
            == 1
        )
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == "1.2.840.99.1.1")
        ).one()
        assert (
            len(session.scalars(select(Instance).where(Instance.series_id == series.id)).all())
            == 40
        )
    engine.dispose()


def test_sweeper_locks_and_requeues_on_postgres(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        series = Series(
            study=Study(study_instance_uid="1.2.840.99.2"), series_instance_uid="1.2.840.99.2.1"
        )
        job = Job(
            series=series,
            model_name="m",
            model_version="1",
            queue="cpu",
            state=JobState.RUNNING,
            attempts=1,
            max_attempts=3,
            started_at=utcnow() - timedelta(days=1),
        )
        session.add(job)
        session.flush()
        job_id = job.id
    stale, _ = sweep(factory, running_timeout_s=3600, requeue_after_s=3600)
    assert job_id in stale
    with factory() as session:
        assert session.get_one(Job, job_id).state is JobState.QUEUED
    engine.dispose()


def test_a_growing_series_supersedes_its_job_and_withholds_its_deliveries_on_postgres(
    postgres_url: str,
) -> None:
    from db.models import Delivery, DeliveryState, Result
    from dicom_gateway.completion import complete_quiet_series

    factory = make_session_factory(make_engine(postgres_url))
    series_uid = "1.2.840.99.7"
    for sop in ("1.2.840.99.7.1", "1.2.840.99.7.2"):
        record_instance(factory, _info(series_uid, sop))
    complete_quiet_series(factory, 0.0, 3)  # the database is shared: other series too
    with factory.begin() as session:
        job = session.scalars(
            select(Job).join(Series).where(Series.series_instance_uid == series_uid)
        ).one()
        job_id, job.state = job.id, JobState.SUCCEEDED
        session.add(
            Result(
                job=job,
                model_name=job.model_name,
                model_version=job.model_version,
                deliveries=[Delivery(destination="pacs")],
            )
        )
    record_instance(factory, _info(series_uid, "1.2.840.99.7.3"))
    with factory() as session:
        assert session.get_one(Job, job_id).superseded_at is not None
        delivery = session.scalars(
            select(Delivery).join(Result).where(Result.job_id == job_id)
        ).one()
        assert delivery.state is DeliveryState.WITHHELD


def test_a_refused_statement_never_carries_its_parameters(postgres_url: str) -> None:
    """Issue 30 item 6: PostgreSQL refusing a study search (an offset past BIGINT) raised an
    error whose text, logged by the dashboard, held every parameter: the patient ID too."""
    from sqlalchemy.exc import DBAPIError

    engine = make_engine(postgres_url)
    query = select(Study.id).where(Study.patient_id == "PID-SECRET-30").offset(10**20)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as refused:
            conn.execute(query)
    finally:
        engine.dispose()
    assert "PID-SECRET-30" not in str(refused.value)


def test_workers_filling_batches_at_once_take_different_jobs(
    postgres_url: str, tmp_path: Path
) -> None:
    """Cross-series batching (worker.runtime.batch_jobs) claims with FOR UPDATE SKIP LOCKED:
    two workers filling their batches at the same moment never take the same job, and
    neither is left short while queued jobs remain."""
    from worker.pipeline.batching import Batching
    from worker.runtime.batch_jobs import claim_mates
    from worker.runtime.jobs import claim

    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    ids = []
    with factory.begin() as session:
        for k in range(12):
            uid = f"1.2.840.99.77.{k}"
            series = Series(study=Study(study_instance_uid=uid), series_instance_uid=uid)
            job = Job(series=series, model_name="batch-pg", model_version="1", queue="gpu")
            session.add(job)
            session.flush()
            ids.append(job.id)
    leaders = [claim(factory, ids[k], tmp_path, 0.0, f"w{k}") for k in (0, 1)]
    start = threading.Barrier(2)

    def fill(k: int) -> list[int]:
        leader = leaders[k]
        assert leader is not None
        start.wait()
        mates = claim_mates(factory, leader, tmp_path, f"w{k}", Batching(6, 0.0))
        return [m.job_id for m in mates]

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(fill, (0, 1))
    assert len(first) == len(second) == 5
    assert set(first).isdisjoint(second) and set(first) | set(second) == set(ids[2:])
    with factory() as session:
        workers = {
            job.id: job.worker for job in session.scalars(select(Job).where(Job.id.in_(ids)))
        }
        states = set(session.scalars(select(Job.state).where(Job.id.in_(ids))))
    assert states == {JobState.RUNNING}
    assert all(workers[j] == "w0" for j in first) and all(workers[j] == "w1" for j in second)
    engine.dispose()
