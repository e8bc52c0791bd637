"""Retention: received instances are deleted once their series is done with, after a delay.

A series is done with when it has a succeeded job and every delivery of its results is sent,
and its last job finished more than ``older_than`` ago. Files go; the DB records stay, with
``purged_at`` set, so the history of what was received remains.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import DeliveryState, Instance, Job, JobState, Result, Series, SeriesStatus, utcnow

logger = logging.getLogger(__name__)


def _done_with(series: Series, cutoff: datetime) -> bool:
    if series.status is not SeriesStatus.COMPLETE or not series.jobs:
        return False
    if any(job.state in (JobState.QUEUED, JobState.RUNNING) for job in series.jobs):
        return False
    succeeded = [job for job in series.jobs if job.state is JobState.SUCCEEDED]
    if not succeeded:
        return False
    finished = [job.finished_at for job in series.jobs if job.finished_at is not None]
    latest = max(finished) if finished else None
    if latest is not None and latest.tzinfo is None:
        latest = latest.replace(tzinfo=cutoff.tzinfo)
    if latest is None or latest > cutoff:
        return False
    deliveries = [d for job in succeeded for r in job.results for d in r.deliveries]
    return all(d.state is DeliveryState.SENT for d in deliveries)


def purge_inputs(
    session_factory: sessionmaker[Session], older_than: timedelta, *, dry_run: bool = False
) -> tuple[int, int]:
    """Delete eligible instance files; returns (instances, bytes) purged (or that would be)."""
    cutoff = utcnow() - older_than
    count = size = 0
    with session_factory.begin() as session:
        candidates = session.scalars(
            select(Series)
            .where(Series.status == SeriesStatus.COMPLETE)
            .options(
                selectinload(Series.instances),
                selectinload(Series.jobs).selectinload(Job.results).selectinload(Result.deliveries),
            )
        ).all()
        for series in candidates:
            if not _done_with(series, cutoff):
                continue
            instances: list[Instance] = [i for i in series.instances if i.purged_at is None]
            for instance in instances:
                count += 1
                size += instance.size_bytes
                if dry_run:
                    continue
                Path(instance.path).unlink(missing_ok=True)
                instance.purged_at = utcnow()
            if instances and not dry_run:
                logger.info(
                    "series %s: %d input file(s) removed by retention", series.id, len(instances)
                )
    return count, size
