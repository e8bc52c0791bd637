"""Queueing a job: the row the outbox publishes, one per (instance set, model, version).

The gateway queues a job when a series completes; operators queue one with ``medseg
retry|rerun``. A job names the version of its model that is live when it is queued: the one
promoted (``medseg promote``, ``worker.shadow.installs``) when there is one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Instance, Job, JobState
from db.shadow_models import LIVE, ModelInstall
from worker.core.registry import ModelSpec

#: An identical job in one of these states makes a new one unnecessary (``retry`` re-runs).
_COVERED = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.NEEDS_REVIEW)


def input_key(sop_instance_uids: Sequence[str], model: str, version: str) -> str:
    """Identity of a job's input: the instance set and the model that reads it."""
    digest = hashlib.sha256(f"{model}\n{version}\n".encode())
    for uid in sorted(sop_instance_uids):
        digest.update(uid.encode() + b"\n")
    return digest.hexdigest()


def live_version(session: Session, spec: ModelSpec) -> str:
    """The version of ``spec``'s model a job queued now runs: its promoted install's, else
    the one it ships as (the worker loads the same: ``worker.shadow.installs.live_spec``)."""
    promoted = session.scalar(
        select(ModelInstall.version)
        .where(ModelInstall.model_name == spec.name, ModelInstall.role == LIVE)
        .order_by(ModelInstall.id.desc())
        .limit(1)
    )
    return promoted or spec.version


def covering_job(session: Session, series_id: int, key: str) -> int | None:
    """An identical job (same input key) that is queued, running or succeeded, if any."""
    return session.scalar(
        select(Job.id).where(
            Job.series_id == series_id, Job.input_key == key, Job.state.in_(_COVERED)
        )
    )


def queue_job(
    session: Session, series_id: int, spec: ModelSpec, max_attempts: int, *, force: bool = False
) -> int | None:
    """A queued job of ``spec`` for the series' current instances (the outbox publishes it);
    None when an identical job already covers that input, unless ``force``."""
    sop_uids = session.scalars(
        select(Instance.sop_instance_uid).where(Instance.series_id == series_id)
    ).all()
    version = live_version(session, spec)
    key = input_key(sop_uids, spec.name, version)
    if not force and covering_job(session, series_id, key) is not None:
        return None
    job = Job(
        series_id=series_id,
        model_name=spec.name,
        model_version=version,
        queue=spec.queue,
        state=JobState.QUEUED,
        max_attempts=max_attempts,
        input_key=key,
    )
    session.add(job)
    session.flush()
    return job.id
