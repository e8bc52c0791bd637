"""What the broker holds: messages waiting in a queue and those taken but not acknowledged
(kombu's layout, published through the real Celery stack into fakeredis)."""

from __future__ import annotations

import json

import fakeredis
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job
from dicom_gateway.outbox import celery_publisher, dispatch_pending
from tests.support.jobs import add_job
from worker.core.broker import create_celery
from worker.core.broker_held import held_task_ids
from worker.core.settings import Settings


def test_queued_and_unacknowledged_messages_are_held_and_nothing_else(
    fake_redis: fakeredis.FakeRedis, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    publish = celery_publisher(
        create_celery(settings.model_copy(update={"broker_url": "redis://fake:6379/0"}))
    )
    waiting, taken = add_job(session_factory, "gpu"), add_job(session_factory, "cpu")
    assert dispatch_pending(session_factory, publish) == 2
    with session_factory() as session:
        task_id = {
            job_id: session.get_one(Job, job_id).celery_task_id for job_id in (waiting, taken)
        }
    assert held_task_ids(fake_redis) == set(task_id.values())

    # A worker takes the cpu message: out of its list, into the unacked hash.
    raw = fake_redis.rpop("cpu")
    assert raw is not None
    fake_redis.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", "cpu"]))
    fake_redis.hset("unacked", "tag-2", b"not json")
    assert held_task_ids(fake_redis) == set(task_id.values())
    assert held_task_ids(fake_redis, "other-prefix:") == set()

    fake_redis.flushall()
    assert held_task_ids(fake_redis) == set()
