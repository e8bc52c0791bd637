"""The sweeper: jobs a worker or the broker lost are put back in the outbox (or quarantined).

- RUNNING longer than Redis' visibility timeout plus a margin: the worker died and the
  broker did not redeliver (e.g. Redis restarted without persistence). Re-queued, or
  quarantined when its attempts are used up; the reason is kept.
- QUEUED and published longer ago than ``requeue_after``, never started: the message was lost.
  Published again; a duplicate that still arrives is recognised by the worker and dropped.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import give_back
from db.models import Job, JobState, utcnow

logger = logging.getLogger(__name__)


def sweep(
    session_factory: sessionmaker[Session],
    *,
    running_timeout_s: float,
    requeue_after_s: float,
    now: datetime | None = None,
) -> tuple[list[int], list[int]]:
    """Returns (IDs of stale running jobs handled, IDs of lost queued jobs republished)."""
    now = now or utcnow()
    stale: list[int] = []
    lost: list[int] = []
    with session_factory.begin() as session:
        for job in session.scalars(
            select(Job)
            .where(
                Job.state == JobState.RUNNING,
                Job.started_at < now - timedelta(seconds=running_timeout_s),
            )
            .with_for_update(skip_locked=True)
        ):
            reason = f"worker lost: running since {job.started_at} (attempt {job.attempts})"
            give_back(job, reason)
            logger.warning("job %s: %s -> %s", job.id, reason, job.state.value)
            stale.append(job.id)
        for job in session.scalars(
            select(Job)
            .where(
                Job.state == JobState.QUEUED,
                Job.enqueued_at < now - timedelta(seconds=requeue_after_s),
            )
            .with_for_update(skip_locked=True)
        ):
            logger.warning(
                "job %s published at %s never started; publishing again", job.id, job.enqueued_at
            )
            job.enqueued_at = None
            lost.append(job.id)
    return stale, lost
