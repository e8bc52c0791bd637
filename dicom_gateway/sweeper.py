"""The sweeper: jobs a worker or the broker lost are put back in the outbox (or quarantined).

- RUNNING longer than Redis' visibility timeout plus a margin: the worker died and the
  broker did not redeliver (e.g. Redis restarted without persistence). Re-queued, or
  quarantined when its attempts are used up; the reason is kept.
- QUEUED and published longer ago than ``requeue_after``, never started: the message was lost.
  Published again; a duplicate that still arrives is recognised by the worker and dropped.
- QUEUED, published longer ago than ``lost_after`` (minutes), and its task id is nowhere in
  the broker (not waiting in a queue, not taken by a worker): Redis lost it (restarted empty).
  Published again at once rather than after ``requeue_after`` (``republish_lost``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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


def republish_lost(
    session_factory: sessionmaker[Session],
    held_task_ids: Callable[[], set[str]],
    *,
    lost_after_s: float,
    now: datetime | None = None,
) -> list[int]:
    """Queued jobs published over ``lost_after_s`` ago whose message the broker no longer
    holds (``held_task_ids()``, which raises when the broker cannot be asked): published
    again. Returns their IDs.

    The check is done twice with the same answer before a job is republished, so a message
    a worker is just taking (out of its queue, not yet in the unacked set) is not mistaken
    for a lost one; were it anyway, the worker's claim drops the duplicate.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=lost_after_s)
    with session_factory() as session:
        published = {
            job_id: task_id
            for job_id, task_id in session.execute(
                select(Job.id, Job.celery_task_id).where(
                    Job.state == JobState.QUEUED, Job.enqueued_at < cutoff
                )
            )
        }
    if not published:
        return []
    missing = dict(published)
    for _ in range(2):
        held = held_task_ids()
        missing = {job_id: task_id for job_id, task_id in missing.items() if task_id not in held}
        if not missing:
            return []
    lost: list[int] = []
    with session_factory.begin() as session:
        for job in session.scalars(
            select(Job)
            .where(Job.id.in_(missing), Job.state == JobState.QUEUED, Job.enqueued_at < cutoff)
            .with_for_update(skip_locked=True)
        ):
            if job.celery_task_id != missing[job.id]:
                continue  # published again meanwhile
            logger.warning(
                "job %s: its message %s is no longer in the broker (published at %s); "
                "publishing again",
                job.id,
                job.celery_task_id,
                job.enqueued_at,
            )
            job.enqueued_at = None
            lost.append(job.id)
    return lost
