"""Run a model again over the series it ran on: ``medseg rerun``, the dashboard's Rerun.

A rerun does not pile identical failures on a study: a series whose identical job (same
instances, same model version) failed is retried in that job rather than given a new one,
and one that failed on its input (it would fail again) is left, unless ``force``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session, sessionmaker

from db.jobstate import transition
from db.models import Instance, Job, JobState
from worker.core.registry import ModelSpec
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import RETRY_ALL, model_to_run

logger = logging.getLogger(__name__)


def rerun_scope(
    session_factory: sessionmaker[Session], model_name: str, since: datetime | None = None
) -> int:
    """How many series ``rerun`` would look at (those ``model_name`` ran on, since ``since``):
    what an operator confirms before a rerun."""
    with session_factory() as session:
        query = select(func.count(distinct(Job.series_id))).where(Job.model_name == model_name)
        if since is not None:
            query = query.where(Job.created_at >= since)
        return int(session.scalar(query) or 0)


def _series(session: Session, model_name: str, since: datetime | None) -> list[int]:
    query = select(Job.series_id).where(Job.model_name == model_name).distinct()
    if since is not None:
        query = query.where(Job.created_at >= since)
    return sorted(session.scalars(query).all())


def _key(session: Session, series_id: int, spec: ModelSpec) -> str:
    """The input key of a job of ``spec``'s live version queued now (``queue_job``'s)."""
    from worker.core.enqueue import input_key, live_version

    uids = session.scalars(
        select(Instance.sop_instance_uid).where(Instance.series_id == series_id)
    ).all()
    return input_key(uids, spec.name, live_version(session, spec))


def _identical_failure(session: Session, series_id: int, key: str) -> Job | None:
    """The newest identical job that failed or was quarantined (not superseded)."""
    return session.scalars(
        select(Job)
        .where(
            Job.series_id == series_id,
            Job.input_key == key,
            Job.state.in_(RETRY_ALL),
            Job.superseded_at.is_(None),
        )
        .order_by(Job.id.desc())
        .limit(1)
        .with_for_update()
    ).first()


def rerun_plan(
    session_factory: sessionmaker[Session],
    model_name: str,
    *,
    since: datetime | None = None,
    force: bool = False,
) -> list[int]:
    """The series ``rerun`` would queue a job for (``--dry-run``): nothing is written."""
    from worker.core.enqueue import covering_job

    spec = model_to_run(model_name)
    planned: list[int] = []
    with session_factory() as session:
        for series_id in _series(session, model_name, since):
            key = _key(session, series_id, spec)
            if force:
                planned.append(series_id)
                continue
            failed = _identical_failure(session, series_id, key)
            if failed is not None:
                if failed.error_kind != "input":
                    planned.append(series_id)
            elif covering_job(session, series_id, key) is None:
                planned.append(series_id)
    return planned


def rerun(
    session_factory: sessionmaker[Session],
    model_name: str,
    *,
    since: datetime | None = None,
    force: bool = False,
    max_attempts: int = 3,
    actor: Actor | None = None,
) -> list[int]:
    """Jobs with the model's live version (the promoted one, if any) for every series it ran
    on (since ``since``); returns the IDs queued.

    Earlier jobs and their results stay. A series whose identical job (same instances, same
    model version) is queued, running or succeeded is skipped; one whose identical job failed
    has that job queued again with a fresh budget (no pile of identical failures), unless it
    failed on its input (it would fail again). ``force``: a new job for every series.
    """
    from worker.core.enqueue import live_version, queue_job

    with refusals(session_factory, actor, "rerun"):
        spec = model_to_run(model_name)
    queued: list[int] = []
    with session_factory.begin() as session:
        version = live_version(session, spec)
        detail = f"{model_name} {version}" + (
            f" since {since.isoformat(timespec='minutes')}" if since else ""
        )
        detail += " (forced)" if force else ""
        for series_id in _series(session, model_name, since):
            failed = (
                None
                if force
                else _identical_failure(session, series_id, _key(session, series_id, spec))
            )
            if failed is not None:
                if failed.error_kind == "input":
                    continue  # the same input fails the same way
                transition(failed, JobState.QUEUED)
                failed.attempts, failed.not_before, failed.error_kind = 0, None, None
                queued.append(failed.id)
                record(
                    session,
                    actor,
                    "rerun",
                    job_id=failed.id,
                    detail=f"{detail}: the identical failed job queued again",
                )
                continue
            job_id = queue_job(session, series_id, spec, max_attempts, force=force)
            if job_id is not None:
                queued.append(job_id)
                record(session, actor, "rerun", job_id=job_id, detail=detail)
        if not queued:
            record(session, actor, "rerun", detail=f"{detail}: no job queued")
    logger.info("rerun of %s %s: %d job(s)", model_name, version, len(queued))
    return queued
