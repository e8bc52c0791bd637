"""A job whose series gained instances after it was made ran (or would run) on part of the
series: it is superseded by the job made when the series is complete again.

- queued: cancelled, it will not run;
- running or finished: marked (``Job.superseded_at``); its result stays for the record, but
  deliveries not yet sent are withheld, and a running job's deliveries are withheld when it
  records its result (``worker.delivery.policy``). A delivery already sent stays sent: the
  new job's result, on the whole series, is delivered after it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.jobstate import transition
from db.models import Delivery, DeliveryState, Job, JobState, Result

logger = logging.getLogger(__name__)

WITHHELD_SUPERSEDED = (
    "withheld: superseded, the series gained instances after this job was made "
    "(the job made when it is complete again covers the whole series)"
)
CANCELLED_SUPERSEDED = "superseded: the series gained instances before this job ran"
#: The same when an instance moved to another series (resent under another Series UID).
WITHHELD_LOST = (
    "withheld: superseded, an instance of the series moved to another series after this job "
    "was made"
)
CANCELLED_LOST = "superseded: an instance of the series moved to another series before it ran"


def supersede_jobs(
    session: Session, series_id: int, now: datetime, lost: bool = False
) -> list[int]:
    """Mark the jobs of ``series_id`` not yet superseded (in ``session``, no commit); their
    IDs. Called when an instance new to the series is recorded, or (``lost``) when one of
    its instances moved to another series."""
    jobs = list(
        session.scalars(
            select(Job)
            .where(Job.series_id == series_id, Job.superseded_at.is_(None))
            .with_for_update()
        )
    )
    for job in jobs:
        job.superseded_at = now
        if job.state is JobState.QUEUED:
            transition(
                job, JobState.CANCELLED, error=CANCELLED_LOST if lost else CANCELLED_SUPERSEDED
            )
        withheld = session.scalars(
            select(Delivery)
            .join(Result, Result.id == Delivery.result_id)
            .where(Result.job_id == job.id, Delivery.state == DeliveryState.PENDING)
            .with_for_update(of=Delivery)
        ).all()
        for delivery in withheld:
            delivery.state = DeliveryState.WITHHELD
            delivery.error = WITHHELD_LOST if lost else WITHHELD_SUPERSEDED
        logger.warning(
            "job %s superseded: series %s %s (%s, %d deliveries withheld)",
            job.id,
            series_id,
            "lost an instance to another series" if lost else "gained instances",
            job.state.value,
            len(withheld),
        )
    return [job.id for job in jobs]
