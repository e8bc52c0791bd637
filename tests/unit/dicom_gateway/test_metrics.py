"""The gateway's scrape-time gauges: jobs and deliveries by state, read from the database."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, DeliveryState, Job, JobState, Result, Series, Study
from dicom_gateway.metrics import _StateCollector


def test_deliveries_by_state_are_gauges(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        series = Series(study=Study(study_instance_uid="1.8"), series_instance_uid="1.8.1")
        job = Job(
            series=series,
            model_name="m",
            model_version="1",
            queue="cpu",
            state=JobState.SUCCEEDED,
        )
        job.results.append(
            Result(
                model_name="m",
                model_version="1",
                deliveries=[
                    Delivery(destination="a", state=DeliveryState.FAILED),
                    Delivery(destination="b", state=DeliveryState.FAILED),
                    Delivery(destination="c", state=DeliveryState.SENT),
                ],
            )
        )
        session.add(job)
    families = {
        family.name: {tuple(s.labels.values()): s.value for s in family.samples}
        for family in _StateCollector(session_factory, lambda queue: None).collect()
    }
    assert families["medseg_deliveries"] == {("failed",): 2.0, ("sent",): 1.0}
    assert families["medseg_jobs"] == {("succeeded",): 1.0}
    assert families["medseg_database_up"] == {(): 1.0}


def test_database_up_is_zero_when_the_scrape_cannot_read_it() -> None:
    from db.session import make_engine, make_session_factory

    engine = make_engine("postgresql+psycopg://medseg@127.0.0.1:1/medseg")
    try:
        collector = _StateCollector(make_session_factory(engine), lambda queue: None)
        up = {f.name: f.samples[0].value for f in collector.collect() if f.samples}
    finally:
        engine.dispose()
    assert up == {"medseg_database_up": 0.0}
