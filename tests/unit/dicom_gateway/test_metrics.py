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


class _Workers:
    """A Celery app with two workers: one on both queues, one on cpu only."""

    def __init__(self) -> None:
        self.control = self

    def inspect(self, timeout: float) -> _Workers:
        return self

    def active_queues(self) -> dict[str, list[dict[str, str]]]:
        return {"medseg@a": [{"name": "gpu"}, {"name": "cpu"}], "medseg@b": [{"name": "cpu"}]}


def test_workers_alive_and_queue_consumers_come_from_the_probe(
    session_factory: sessionmaker[Session],
) -> None:
    import fakeredis

    from worker.core.broker_probe import BrokerProbe

    probe = BrokerProbe(fakeredis.FakeRedis(), _Workers(), interval_s=60)
    assert probe.latest(wait_s=5) is not None
    probe.stop()
    families = {
        family.name: {tuple(s.labels.values()): s.value for s in family.samples}
        for family in _StateCollector(session_factory, lambda q: 0, probe.latest).collect()
    }
    assert families["medseg_workers_alive"] == {(): 2.0}
    assert families["medseg_queue_consumers"] == {("gpu",): 1.0, ("cpu",): 2.0}

    down = BrokerProbe(None, _Workers(), interval_s=60)  # the broker cannot be read
    assert down.latest(wait_s=5) is not None
    down.stop()
    names = {
        f.name for f in _StateCollector(session_factory, lambda q: None, down.latest).collect()
    }
    assert "medseg_workers_alive" not in names and "medseg_queue_consumers" not in names
