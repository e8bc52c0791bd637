"""A reviewer's decision on a flagged (``needs_review``) result: accept or reject it, by whom,
when and why. The job stays ``needs_review`` (its run's outcome); the decision is on the
result, and the result's withheld deliveries follow it: an accepted result is sent where the
destination's policy now allows it, a rejected one never is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Delivery, DeliveryState, Job, JobState, Result, Series, utcnow
from worker.core.settings import DicomDestination
from worker.delivery.policy import policy_for, withhold_reason
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import OperationError

logger = logging.getLogger(__name__)

Decision = Literal["accepted", "rejected"]
DECISIONS: tuple[Decision, ...] = ("accepted", "rejected")


@dataclass(frozen=True)
class Decided:
    job_id: int
    decision: Decision
    released: list[str]  # destinations the result is now queued for
    withheld: list[str]  # destinations it stays withheld from (reason on the delivery)


def _follow(delivery: Delivery, result: Result, destinations: Sequence[DicomDestination]) -> bool:
    """Re-decide one unsent delivery after the decision; True when it is pending now."""
    if delivery.state is DeliveryState.PENDING and result.review_decision == "rejected":
        delivery.state, delivery.error = DeliveryState.WITHHELD, "withheld: rejected by a reviewer"
        return False
    if delivery.state is not DeliveryState.WITHHELD:
        return delivery.state is DeliveryState.PENDING
    policy = policy_for(delivery.destination, destinations)
    reason = (
        "withheld: the destination is no longer configured"
        if policy is None
        else withhold_reason(
            policy,
            flagged=bool(result.review),
            validation=result.validation,
            decision=result.review_decision,
            superseded=result.job.superseded_at is not None,
        )
    )
    if reason is not None:
        delivery.error = reason
        return False
    delivery.state, delivery.error = DeliveryState.PENDING, None
    delivery.attempts, delivery.enqueued_at, delivery.not_before = 0, None, None
    return True


def decide(
    session_factory: sessionmaker[Session],
    job_id: int,
    decision: Decision,
    *,
    by: str,
    note: str | None = None,
    force: bool = False,
    destinations: Sequence[DicomDestination] = (),
    actor: Actor | None = None,
) -> Decided:
    """Record ``by``'s decision on job ``job_id``'s result. Only a ``needs_review`` job's
    result can be decided, once; ``force`` replaces an earlier decision. ``actor``: the
    operator, recorded in the audit trail."""
    if decision not in DECISIONS:
        raise OperationError(f"unknown decision {decision!r}: accepted or rejected")
    if not by.strip():
        raise OperationError("say who decides (--by NAME)")
    action = "accept" if decision == "accepted" else "reject"
    with refusals(session_factory, actor, action, job_id=job_id):
        return _decide(
            session_factory,
            job_id,
            decision,
            by=by,
            note=note,
            force=force,
            destinations=destinations,
            actor=actor,
        )


def _decide(
    session_factory: sessionmaker[Session],
    job_id: int,
    decision: Decision,
    *,
    by: str,
    note: str | None,
    force: bool,
    destinations: Sequence[DicomDestination],
    actor: Actor | None,
) -> Decided:
    with session_factory.begin() as session:
        job = session.get(
            Job,
            job_id,
            with_for_update=True,
            options=[selectinload(Job.results).selectinload(Result.deliveries)],
        )
        if job is None:
            raise OperationError(f"no job {job_id}")
        if job.state is not JobState.NEEDS_REVIEW or not job.results:
            raise OperationError(
                f"job {job_id} is {job.state.value}; only needs_review results are reviewed"
            )
        result = job.results[-1]
        if result.review_decision and not force:
            raise OperationError(
                f"job {job_id} was already {result.review_decision} by "
                f"{result.reviewed_by or '-'} (use --force to change it)"
            )
        result.review_decision = decision
        result.reviewed_by = by.strip()[:128]
        result.reviewed_at = utcnow()
        result.review_note = note or None
        released, withheld = [], []
        for delivery in result.deliveries:
            if delivery.state in (DeliveryState.SENT, DeliveryState.FAILED):
                continue
            if _follow(delivery, result, destinations):
                released.append(delivery.destination)
            else:
                withheld.append(delivery.destination)
        record(
            session,
            actor,
            "accept" if decision == "accepted" else "reject",
            job_id=job_id,
            detail=f"{decision} by {result.reviewed_by}"
            + (" (replacing an earlier decision)" if force else "")
            + (f"; queued for {', '.join(released)}" if released else ""),
        )
    logger.info(
        "job %s %s by a reviewer; queued for %s, withheld from %s",
        job_id,
        decision,
        released or "-",
        withheld or "-",
    )
    return Decided(job_id, decision, released, withheld)


@dataclass(frozen=True)
class Pending:
    """A flagged result no reviewer has decided: one line of the review worklist."""

    job_id: int
    study_id: int
    model: str
    modality: str
    #: When the result was made (the job's end): the worklist is oldest first.
    flagged_at: datetime
    reasons: list[str]

    @property
    def waiting_s(self) -> float:
        return max(0.0, (utcnow() - self.flagged_at).total_seconds())


def pending_reviews(session_factory: sessionmaker[Session], limit: int = 500) -> list[Pending]:
    """The review worklist: ``needs_review`` jobs whose latest result is undecided, oldest
    first, with the gate's reasons. Accepted and rejected results are not on it."""
    latest = select(func.max(Result.id).label("id")).group_by(Result.job_id).subquery("latest")
    query = (
        select(Job, Result, Series)
        .join(Result, Result.job_id == Job.id)
        .join(latest, latest.c.id == Result.id)
        .join(Series, Series.id == Job.series_id)
        .where(Job.state == JobState.NEEDS_REVIEW, Result.review_decision.is_(None))
        .order_by(func.coalesce(Job.finished_at, Result.created_at), Job.id)
        .limit(limit)
    )
    found: list[Pending] = []
    with session_factory() as session:
        for job, result, series in session.execute(query).all():
            when = job.finished_at or result.created_at
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)  # SQLite returns naive UTC
            found.append(
                Pending(
                    job_id=job.id,
                    study_id=series.study_id,
                    model=f"{job.model_name} {job.model_version}",
                    modality=series.modality,
                    flagged_at=when,
                    reasons=[r for r in (result.review or "").splitlines() if r.strip()],
                )
            )
    return found
