"""Series completion: a series quiet for its period (by calling AE, by model, or the default),
or holding every instance its sender announced, is complete and gets ONE job.

Quiet counts from the last instance's arrival, or from the gateway's (re)start when that is
later (``Series.interrupted_at``): a sender cut off by a gateway restart mid-series could not
send while the gateway was down, so the time the gateway was away is not quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Series, SeriesStatus, utcnow
from dicom_gateway import metrics
from dicom_gateway.corrections import is_correction, record_received
from worker.core.enqueue import queue_job
from worker.core.routing import route, unrouted_reason
from worker.core.tags import SeriesTags

logger = logging.getLogger(__name__)


def _tags(series: Series) -> SeriesTags:
    return SeriesTags.of_row(series)


@dataclass(frozen=True)
class QuietPolicy:
    """How long a series must be quiet to be complete: by calling AE first, then by the model
    it routes to, then the default (``MEDSEG_SERIES_QUIET_SECONDS*``)."""

    default_s: float
    by_calling_ae: Mapping[str, float] = field(default_factory=dict)
    by_model: Mapping[str, float] = field(default_factory=dict)

    @property
    def shortest_s(self) -> float:
        return min([self.default_s, *self.by_calling_ae.values(), *self.by_model.values()])

    def seconds(self, series: Series) -> float:
        if series.calling_ae in self.by_calling_ae:
            return self.by_calling_ae[series.calling_ae]
        if self.by_model:
            spec = route(_tags(series))
            if spec is not None and spec.name in self.by_model:
                return self.by_model[spec.name]
        return self.default_s


def _aware(moment: datetime, now: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=now.tzinfo)  # SQLite: naive UTC


def mark_interrupted(session_factory: sessionmaker[Session], now: datetime | None = None) -> int:
    """At the gateway's start: every series still receiving lost its sender's association
    with the gateway that stopped; its quiet period counts from ``now``. Returns how many."""
    now = now or utcnow()
    with session_factory.begin() as session:
        marked = int(
            session.execute(  # type: ignore[attr-defined]
                update(Series)
                .where(Series.status == SeriesStatus.RECEIVING)
                .values(interrupted_at=now)
            ).rowcount
        )
    if marked:
        logger.info("%d series were receiving when the gateway stopped: quiet from now", marked)
    return marked


def _quiet_series(session: Session, policy: QuietPolicy, now: datetime) -> dict[int, datetime]:
    """Receiving series quiet for their own period: {series id: its cutoff}."""
    candidates = session.scalars(
        select(Series).where(
            Series.status == SeriesStatus.RECEIVING,
            Series.last_received_at < now - timedelta(seconds=policy.shortest_s),
        )
    ).all()
    quiet: dict[int, datetime] = {}
    for series in candidates:
        cutoff = now - timedelta(seconds=policy.seconds(series))
        since = _aware(series.last_received_at, now)
        if series.interrupted_at is not None:
            since = max(since, _aware(series.interrupted_at, now))
        if since < cutoff:
            quiet[series.id] = cutoff
    return quiet


def complete_quiet_series(
    session_factory: sessionmaker[Session],
    quiet: float | QuietPolicy,
    max_attempts: int,
    now: datetime | None = None,
) -> list[int]:
    """Mark quiet series complete and create their jobs; returns the new job IDs.

    The status change is a conditional UPDATE, so an instance arriving meanwhile (which
    bumps ``last_received_at``) or a second gateway cannot complete a series twice.
    """
    now = now or utcnow()
    policy = quiet if isinstance(quiet, QuietPolicy) else QuietPolicy(float(quiet))
    created: list[int] = []
    with session_factory() as session:
        cutoffs = _quiet_series(session, policy, now)
        # Series whose sender told us how many images to expect, and all have arrived.
        full = set(
            session.scalars(
                select(Series.id)
                .join(Instance, Instance.series_id == Series.id)
                .where(
                    Series.status == SeriesStatus.RECEIVING,
                    Series.expected_instances.is_not(None),
                )
                .group_by(Series.id, Series.expected_instances)
                .having(func.count(Instance.id) >= Series.expected_instances)
            )
        )
    for series_id in sorted(set(cutoffs) | full):
        still_quiet = (
            and_(
                Series.last_received_at < cutoffs[series_id],
                or_(Series.interrupted_at.is_(None), Series.interrupted_at < cutoffs[series_id]),
            )
            if series_id not in full
            else true()
        )
        with session_factory.begin() as session:
            claimed = session.execute(  # type: ignore[attr-defined]
                update(Series)
                .where(
                    Series.id == series_id,
                    Series.status == SeriesStatus.RECEIVING,
                    still_quiet,
                )
                .values(status=SeriesStatus.COMPLETE, completed_at=now)
            ).rowcount
            if claimed != 1:
                continue
            series = session.get_one(Series, series_id)
            last = series.last_received_at
            last = last if last.tzinfo else last.replace(tzinfo=now.tzinfo)
            metrics.COMPLETION_DELAY.observe((now - last).total_seconds())
            if is_correction(series):  # a reviewer's corrected SEG: no job, the worker matches it
                record_received(session, series)
                continue
            spec = route(_tags(series))
            if spec is None:
                series.status = SeriesStatus.UNROUTED
                logger.info(
                    "series %s complete, not processed: %s",
                    series_id,
                    unrouted_reason(_tags(series)),
                )
                continue
            job_id = queue_job(session, series_id, spec, max_attempts)
            if job_id is None:
                logger.info("series %s complete again, same instances: no new job", series_id)
                continue
            created.append(job_id)
            logger.info("series %s complete; job %s for %s", series_id, job_id, spec.name)
    return created
