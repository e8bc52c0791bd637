"""Series completion: a series quiet for the configured period is complete and gets ONE job."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Series, SeriesStatus, utcnow
from worker.routing import SeriesTags, route

logger = logging.getLogger(__name__)


def _tags(series: Series) -> SeriesTags:
    return SeriesTags.of(
        modality=series.modality,
        body_part_examined=series.body_part_examined,
        series_description=series.series_description,
        image_type=series.image_type,
        sop_class_uid=series.sop_class_uid,
    )


def complete_quiet_series(
    session_factory: sessionmaker[Session],
    quiet_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
) -> list[int]:
    """Mark quiet series complete and create their jobs; returns the new job IDs.

    The status change is a conditional UPDATE, so an instance arriving meanwhile (which
    bumps ``last_received_at``) or a second gateway cannot complete a series twice.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=quiet_seconds)
    created: list[int] = []
    with session_factory() as session:
        candidates = session.scalars(
            select(Series.id).where(
                Series.status == SeriesStatus.RECEIVING, Series.last_received_at < cutoff
            )
        ).all()
    for series_id in candidates:
        with session_factory.begin() as session:
            claimed = session.execute(  # type: ignore[attr-defined]
                update(Series)
                .where(
                    Series.id == series_id,
                    Series.status == SeriesStatus.RECEIVING,
                    Series.last_received_at < cutoff,
                )
                .values(status=SeriesStatus.COMPLETE, completed_at=now)
            ).rowcount
            if claimed != 1:
                continue
            series = session.get_one(Series, series_id)
            spec = route(_tags(series))
            if spec is None:
                series.status = SeriesStatus.UNROUTED
                logger.info("series %s complete; no model accepts it", series_id)
                continue
            job = Job(
                series_id=series_id,
                model_name=spec.name,
                model_version=spec.version,
                queue=spec.queue,
                state=JobState.QUEUED,
                max_attempts=max_attempts,
            )
            session.add(job)
            session.flush()
            created.append(job.id)
            logger.info("series %s complete; job %s for %s", series_id, job.id, spec.name)
    return created
