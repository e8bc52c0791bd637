"""Redis restarted empty (FLUSHALL) after a job was published: the gateway's monitor sees the
message is gone from the broker and publishes the job again within seconds; it then runs."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState
from dicom_gateway.monitor import CompletionMonitor
from dicom_gateway.outbox import celery_publisher
from tests.support.factories import chest_series
from tests.support.jobs import queue_test_job
from tests.support.tools import need, wait_until
from worker.core.broker import create_celery
from worker.core.broker_held import held_task_ids
from worker.core.settings import Settings
from worker.devtools.localstack import start_redis
from worker.pipeline.cache import ModelCache
from worker.runtime.jobs import execute_job


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    need("redis-server", shutil.which("redis-server") is not None)
    url, process = start_redis(tmp_path / "redis")
    yield url
    process.kill()
    process.wait(10)


def _task_id(session_factory: sessionmaker[Session], job_id: int) -> str | None:
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        return job.celery_task_id if job.enqueued_at is not None else None


def test_a_job_lost_with_redis_is_published_again_within_seconds_and_runs(
    private_redis: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(
        update={
            "broker_url": private_redis,
            "sweep_interval_seconds": 0.2,
            "lost_message_after_seconds": 1.0,
        }
    )
    client = redis.Redis.from_url(private_redis)
    monitor = CompletionMonitor(
        session_factory,
        celery_publisher(create_celery(settings)),
        settings,
        held_task_ids=partial(held_task_ids, client, settings.broker_key_prefix),
    )
    job_id = queue_test_job(session_factory, chest_series(tmp_path / "in", 0, slices=2))
    monitor.start()
    try:
        wait_until(lambda: client.llen("cpu") == 1 and _task_id(session_factory, job_id), 10)
        first = _task_id(session_factory, job_id)
        time.sleep(1.5)  # older than lost_message_after_seconds, still held: left alone
        assert _task_id(session_factory, job_id) == first and client.llen("cpu") == 1

        client.flushall()  # Redis restarted empty
        lost_at = time.monotonic()
        wait_until(lambda: client.llen("cpu") == 1, 10)
        waited = time.monotonic() - lost_at
    finally:
        monitor.stop()
    second = _task_id(session_factory, job_id)
    assert second is not None and second != first
    assert waited < 5.0, f"republished after {waited:.1f} s"

    # The republished message is the job's, and a worker runs it.
    raw = client.rpop("cpu")
    assert raw is not None
    args, _, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert args == [job_id]
    state = execute_job(session_factory, ModelCache("cpu"), tmp_path / "results", job_id)
    assert state is JobState.SUCCEEDED
