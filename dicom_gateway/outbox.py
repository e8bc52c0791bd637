"""The job outbox: jobs are committed first, then published; a broker outage loses nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, utcnow

logger = logging.getLogger(__name__)

#: publish(job_id, queue) -> broker message/task id; raises when the broker is unreachable.
Publisher = Callable[[int, str], str]


def dispatch_pending(
    session_factory: sessionmaker[Session], publish: Publisher, now: datetime | None = None
) -> int:
    """Publish every queued job not yet published (and due); returns how many were sent."""
    now = now or utcnow()
    with session_factory() as session:
        pending = session.execute(
            select(Job.id, Job.queue)
            .where(
                Job.state == JobState.QUEUED,
                Job.enqueued_at.is_(None),
                or_(Job.not_before.is_(None), Job.not_before <= now),
            )
            .order_by(Job.id)
        ).all()
    sent = 0
    for job_id, queue in pending:
        try:
            task_id = publish(job_id, queue)
        except Exception as exc:  # the broker's client raises many kinds; all mean "not sent"
            logger.warning(
                "broker unavailable, %d job(s) wait in the outbox: %s", len(pending) - sent, exc
            )
            break
        with session_factory.begin() as session:
            job = session.get(Job, job_id)
            if job is not None and job.state is JobState.QUEUED:
                job.enqueued_at = utcnow()
                job.celery_task_id = task_id
        sent += 1
    return sent


def celery_publisher(app: object) -> Publisher:
    """A publisher sending ``medseg.run_job`` through a Celery app, failing fast when down."""
    from celery import Celery

    from worker.celery_app import TASK_RUN_JOB

    assert isinstance(app, Celery)

    def publish(job_id: int, queue: str) -> str:
        result = app.send_task(
            TASK_RUN_JOB,
            args=[job_id],
            queue=queue,
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
        )
        return str(result.id)

    return publish
