from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Result,
    Series,
    SeriesStatus,
    utcnow,
)
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from worker.core.retention import purge_inputs


def _finished_series(
    session_factory: sessionmaker[Session], tmp_path: Path, days_ago: float, delivery: DeliveryState
) -> int:
    job_id = queue_test_job(session_factory, chest_series(tmp_path, 0, slices=3))
    with session_factory.begin() as session:
        job = session.get_one(Job, job_id)
        job.state = JobState.SUCCEEDED
        job.finished_at = utcnow() - timedelta(days=days_ago)
        job.series.status = SeriesStatus.COMPLETE
        job.results.append(
            Result(
                model_name="m",
                model_version="1",
                deliveries=[Delivery(destination="pacs", state=delivery)],
            )
        )
        return job.series_id


def _files(session_factory: sessionmaker[Session], series_id: int) -> list[Instance]:
    with session_factory() as session:
        return list(session.scalars(select(Instance).where(Instance.series_id == series_id)))


def test_old_delivered_series_lose_their_files_not_their_records(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    series_id = _finished_series(session_factory, tmp_path, 10, DeliveryState.SENT)
    assert purge_inputs(session_factory, timedelta(days=7), dry_run=True)[0] == 3
    assert all(Path(i.path).exists() for i in _files(session_factory, series_id))
    count, size = purge_inputs(session_factory, timedelta(days=7))
    assert count == 3 and size > 0
    instances = _files(session_factory, series_id)
    assert len(instances) == 3
    assert all(i.purged_at is not None and not Path(i.path).exists() for i in instances)
    assert purge_inputs(session_factory, timedelta(days=7)) == (0, 0)


def test_undelivered_or_recent_series_are_kept(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    pending = _finished_series(session_factory, tmp_path / "a", 10, DeliveryState.PENDING)
    recent = _finished_series(session_factory, tmp_path / "b", 1, DeliveryState.SENT)
    assert purge_inputs(session_factory, timedelta(days=7)) == (0, 0)
    for series_id in (pending, recent):
        assert all(Path(i.path).exists() for i in _files(session_factory, series_id))
    with session_factory() as session:
        assert session.scalars(select(Series)).all()
