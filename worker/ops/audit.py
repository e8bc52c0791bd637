"""The audit trail: who did what to which job, delivery or study, when, from where, and what
came of it. The operation functions (``worker.ops``) write it in the action's own transaction,
so the CLI and the dashboard record alike; a refused action is recorded in a transaction of
its own (the action's was rolled back)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Delivery, Job, Result, Series, Study, utcnow

logger = logging.getLogger(__name__)

#: dicom: a corrected SEG sent over C-STORE (worker.corrections), the actor its author.
Source = Literal["dashboard", "cli", "dicom"]
#: Every action the trail records (``medseg audit --action``).
ACTIONS = (
    "retry",
    "retry_all",
    "cancel",
    "rerun",
    "accept",
    "reject",
    "redeliver",
    "redeliver_all",
    "echo",  # a C-ECHO to a destination, from the Failures page
    "route",  # a series sent to a model by hand
    "shadow",  # a model version installed in shadow (worker.shadow.installs)
    "promote",  # a shadow version made live
    "correct",  # a reviewer's corrected result (worker.corrections)
    "set_ga",  # a GA by dates entered for a study, or cleared (worker.ops.dating)
)
DONE, REFUSED = "done", "refused"


@dataclass(frozen=True)
class Actor:
    """Who acts: the dashboard's logged-in user, or the CLI's operator (``--user``,
    MEDSEG_OPERATOR or the OS user), and from where."""

    user: str
    source: Source

    def __post_init__(self) -> None:
        if not self.user.strip():
            raise ValueError("an actor needs a user name")


def _study_of(session: Session, job_id: int) -> int | None:
    return session.scalar(select(Series.study_id).join(Job).where(Job.id == job_id))


def record(
    session: Session,
    actor: Actor | None,
    action: str,
    *,
    job_id: int | None = None,
    delivery_id: int | None = None,
    outcome: str = DONE,
    detail: str | None = None,
    study_id: int | None = None,
) -> None:
    """One audit row in ``session``'s transaction; the job and study are filled in from a
    delivery, the study from a job (``study_id`` for an action on a study itself). Nothing
    when ``actor`` is None (not an operator)."""
    if actor is None:
        return
    if job_id is None and delivery_id is not None:
        job_id = session.scalar(
            select(Result.job_id).join(Delivery).where(Delivery.id == delivery_id)
        )
    session.add(
        AuditEvent(
            at=utcnow(),
            actor=actor.user.strip()[:128],
            source=actor.source,
            action=action,
            job_id=job_id,
            delivery_id=delivery_id,
            study_id=_study_of(session, job_id) if job_id is not None else study_id,
            outcome=outcome,
            detail=detail[:2000] if detail else None,
        )
    )
    logger.info("audit: %s %s (%s) %s", actor.source, action, outcome, job_id or delivery_id or "")


@contextmanager
def refusals(
    session_factory: sessionmaker[Session],
    actor: Actor | None,
    action: str,
    *,
    job_id: int | None = None,
    delivery_id: int | None = None,
) -> Iterator[None]:
    """Record an OperationError raised in the block as a ``refused`` row, then re-raise."""
    from worker.ops.operations import OperationError

    try:
        yield
    except OperationError as exc:
        if actor is not None:
            record_refused(
                session_factory, actor, action, str(exc), job_id=job_id, delivery_id=delivery_id
            )
        raise


def record_refused(
    session_factory: sessionmaker[Session],
    actor: Actor,
    action: str,
    reason: str,
    *,
    job_id: int | None = None,
    delivery_id: int | None = None,
    study_id: int | None = None,
) -> None:
    """A ``refused`` row in its own transaction; a job or study that does not exist is not
    named."""
    with session_factory.begin() as session:
        exists = job_id is not None and session.get(Job, job_id) is not None
        if study_id is not None and session.get(Study, study_id) is None:
            study_id = None
        record(
            session,
            actor,
            action,
            job_id=job_id if exists else None,
            delivery_id=delivery_id,
            outcome=REFUSED,
            detail=reason,
            study_id=study_id,
        )


def list_events(
    session_factory: sessionmaker[Session],
    *,
    since: datetime | None = None,
    user: str | None = None,
    action: str | None = None,
    job_ids: list[int] | None = None,
    study_id: int | None = None,
    limit: int = 200,
) -> list[AuditEvent]:
    """The trail, newest first, filtered."""
    query = select(AuditEvent)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if user:
        query = query.where(AuditEvent.actor == user)
    if action:
        query = query.where(AuditEvent.action == action)
    if job_ids is not None:
        query = query.where(AuditEvent.job_id.in_(job_ids))
    if study_id is not None:
        query = query.where(AuditEvent.study_id == study_id)
    with session_factory() as session:
        return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)))
