"""The outbox publishes through the real Celery/kombu stack into a fake Redis."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import fakeredis
import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, Study, utcnow
from dicom_gateway.outbox import celery_publisher, dispatch_pending
from worker.celery_app import TASK_RUN_JOB, create_celery
from worker.settings import Settings


@pytest.fixture
def fake_redis(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    import kombu.transport.redis as transport

    client = fakeredis.FakeRedis()
    monkeypatch.setattr(
        transport.Channel, "_create_client", lambda self, asynchronous=False: client
    )
    return client


def _add_job(session_factory: sessionmaker[Session], queue: str, **fields: object) -> int:
    with session_factory.begin() as session:
        uid = f"1.2.3.{session.query(Series).count() + 1}"
        series = Series(study=Study(study_instance_uid=uid), series_instance_uid=uid)
        job = Job(series=series, model_name="m", model_version="1", queue=queue, **fields)
        session.add(job)
        session.flush()
        return job.id


def test_queued_jobs_are_published_once_to_their_queue(
    fake_redis: fakeredis.FakeRedis, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    publish = celery_publisher(
        create_celery(settings.model_copy(update={"broker_url": "redis://fake:6379/0"}))
    )
    gpu_job = _add_job(session_factory, "gpu")
    cpu_job = _add_job(session_factory, "cpu")
    later = _add_job(session_factory, "cpu", not_before=utcnow() + timedelta(hours=1))

    assert dispatch_pending(session_factory, publish) == 2
    assert dispatch_pending(session_factory, publish) == 0  # nothing published twice

    for queue, job_id in (("gpu", gpu_job), ("cpu", cpu_job)):
        (raw,) = fake_redis.lrange(queue, 0, -1)
        message = json.loads(raw)
        assert message["headers"]["task"] == TASK_RUN_JOB
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        assert args == [job_id]
    with session_factory() as session:
        published = session.get_one(Job, cpu_job)
        waiting = session.get_one(Job, later)
    assert published.enqueued_at is not None and published.celery_task_id
    assert waiting.enqueued_at is None and waiting.state is JobState.QUEUED


def test_unreachable_broker_leaves_jobs_unpublished(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    publish = celery_publisher(create_celery(settings))  # redis://127.0.0.1:1: nothing listens
    job_id = _add_job(session_factory, "cpu")
    assert dispatch_pending(session_factory, publish) == 0
    with session_factory() as session:
        assert session.get_one(Job, job_id).enqueued_at is None
