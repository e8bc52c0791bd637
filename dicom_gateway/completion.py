"""Series completion: a series quiet for its period (by calling AE, by model, or the default),
or holding every instance its sender announced, is complete and gets ONE job."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import Instance, Job, JobState, Series, SeriesStatus, utcnow
from dicom_gateway import metrics
from worker.registry import ModelSpec
from worker.routing import SeriesTags, route

logger = logging.getLogger(__name__)


#: An identical job in one of these states makes a new one unnecessary (``retry`` re-runs).
_COVERED = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)


def input_key(sop_instance_uids: Sequence[str], model: str, version: str) -> str:
    """Identity of a job's input: the instance set and the model that reads it."""
    digest = hashlib.sha256(f"{model}\n{version}\n".encode())
    for uid in sorted(sop_instance_uids):
        digest.update(uid.encode() + b"\n")
    return digest.hexdigest()


def covering_job(session: Session, series_id: int, key: str) -> int | None:
    """An identical job (same input key) that is queued, running or succeeded, if any."""
    return session.scalar(
        select(Job.id).where(
            Job.series_id == series_id, Job.input_key == key, Job.state.in_(_COVERED)
        )
    )


def _tags(series: Series) -> SeriesTags:
    return SeriesTags.of(
        modality=series.modality,
        body_part_examined=series.body_part_examined,
        series_description=series.series_description,
        image_type=series.image_type,
        sop_class_uid=series.sop_class_uid,
    )


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
        last = series.last_received_at
        if (last if last.tzinfo else last.replace(tzinfo=now.tzinfo)) < cutoff:
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
            Series.last_received_at < cutoffs[series_id] if series_id not in full else true()
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
            spec = route(_tags(series))
            if spec is None:
                series.status = SeriesStatus.UNROUTED
                logger.info("series %s complete; no model accepts it", series_id)
                continue
            job_id = queue_job(session, series_id, spec, max_attempts)
            if job_id is None:
                logger.info("series %s complete again, same instances: no new job", series_id)
                continue
            created.append(job_id)
            logger.info("series %s complete; job %s for %s", series_id, job_id, spec.name)
    return created


def queue_job(
    session: Session, series_id: int, spec: ModelSpec, max_attempts: int, *, force: bool = False
) -> int | None:
    """A queued job of ``spec`` for the series' current instances (the outbox publishes it);
    None when an identical job already covers that input, unless ``force``."""
    sop_uids = session.scalars(
        select(Instance.sop_instance_uid).where(Instance.series_id == series_id)
    ).all()
    key = input_key(sop_uids, spec.name, spec.version)
    if not force and covering_job(session, series_id, key) is not None:
        return None
    job = Job(
        series_id=series_id,
        model_name=spec.name,
        model_version=spec.version,
        queue=spec.queue,
        state=JobState.QUEUED,
        max_attempts=max_attempts,
        input_key=key,
    )
    session.add(job)
    session.flush()
    return job.id
