"""The outbox publishes through the real Celery/kombu stack into a fake Redis."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import fakeredis
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow
from dicom_gateway.outbox import celery_publisher, dispatch_pending
from tests.support.jobs import add_job
from worker.core.broker import TASK_RUN_JOB, create_celery
from worker.core.settings import Settings


def test_queued_jobs_are_published_once_to_their_queue(
    fake_redis: fakeredis.FakeRedis, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    publish = celery_publisher(
        create_celery(settings.model_copy(update={"broker_url": "redis://fake:6379/0"}))
    )
    gpu_job = add_job(session_factory, "gpu")
    cpu_job = add_job(session_factory, "cpu")
    later = add_job(session_factory, "cpu", not_before=utcnow() + timedelta(hours=1))

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
    job_id = add_job(session_factory, "cpu")
    assert dispatch_pending(session_factory, publish) == 0
    with session_factory() as session:
        assert session.get_one(Job, job_id).enqueued_at is None
