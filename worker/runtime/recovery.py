"""Jobs a worker was running when it died, handed back when that worker starts again.

A worker killed mid-job leaves its job RUNNING, and Redis gives the message back only after
the visibility timeout (hours). A restarted worker node (same ``-n`` name) knows its old jobs
cannot still be running: they go back to the outbox at once, counting the lost attempt, or to
quarantine when their attempts are used up. Jobs of a node that never comes back are left to
the sweeper.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import give_back
from db.models import Job, JobState

logger = logging.getLogger(__name__)


def requeue_orphans(session_factory: sessionmaker[Session], worker: str) -> list[int]:
    """Jobs RUNNING on ``worker`` go back to QUEUED (or QUARANTINED); returns their IDs."""
    handled: list[int] = []
    with session_factory.begin() as session:
        for job in session.scalars(
            select(Job)
            .where(Job.state == JobState.RUNNING, Job.worker == worker)
            .with_for_update(skip_locked=True)
        ):
            reason = f"worker {worker} restarted while running attempt {job.attempts}"
            give_back(job, reason)
            logger.warning("job %s: %s -> %s", job.id, reason, job.state.value)
            handled.append(job.id)
    return handled
