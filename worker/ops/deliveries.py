"""Deliveries as operators see them: which failed for good, and sending a result again without
running its model (``medseg deliver``, the dashboard's buttons).

A delivery that used up its attempts is ``failed`` while its job stays ``succeeded`` (the model
ran); the job then has the ``delivery_failed`` condition, which lists, counts and alerts like a
state but is not one: the job's state machine is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Delivery, DeliveryState, Job, Result, Series
from worker.core.settings import DicomDestination
from worker.delivery.policy import policy_for, withhold_reason
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import OperationError

logger = logging.getLogger(__name__)

#: The condition's name where a job state is expected: ``medseg jobs --state delivery_failed``,
#: ``/jobs?state=delivery_failed``.
DELIVERY_FAILED = "delivery_failed"


def delivery_failed() -> ColumnElement[bool]:
    """SQL condition on ``Job``: a delivery of one of its results failed for good."""
    return exists().where(
        Result.job_id == Job.id,
        Delivery.result_id == Result.id,
        Delivery.state == DeliveryState.FAILED,
    )


def has_failed_delivery(job: Job) -> bool:
    """The condition on a loaded job (its results' deliveries loaded)."""
    return any(d.state is DeliveryState.FAILED for result in job.results for d in result.deliveries)


def failed_deliveries(session_factory: sessionmaker[Session], limit: int = 200) -> list[Delivery]:
    """Deliveries failed for good, newest first, with their result, job, series loaded."""
    query = (
        select(Delivery)
        .where(Delivery.state == DeliveryState.FAILED)
        .options(
            selectinload(Delivery.result)
            .selectinload(Result.job)
            .selectinload(Job.series)
            .selectinload(Series.study)
        )
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    with session_factory() as session:
        return list(session.scalars(query))


def count_failed(session: Session) -> int:
    query = select(func.count()).where(Delivery.state == DeliveryState.FAILED)
    return int(session.scalar(query) or 0)


@dataclass
class Resent:
    """What ``resend`` did: queued again, withheld now by the policy, left as they were."""

    queued: list[int] = field(default_factory=list)
    withheld: dict[int, str] = field(default_factory=dict)
    left: dict[int, str] = field(default_factory=dict)


def _why_not(delivery: Delivery, destinations: Sequence[DicomDestination]) -> str | None:
    """Why a failed delivery cannot be sent again as it is; None: it can."""
    job = delivery.result.job
    if job.superseded_at is not None:
        return "its job was superseded (the series grew): the job on the whole series is sent"
    if max(r.id for r in job.results) != delivery.result_id:
        return "its job has a newer result: that one is sent"
    if policy_for(delivery.destination, destinations) is None:
        return f"destination {delivery.destination!r} is no longer configured"
    return None


def _withheld(delivery: Delivery, destinations: Sequence[DicomDestination]) -> str | None:
    """The destination's policy, asked again: a reviewer may have rejected the result since."""
    policy = policy_for(delivery.destination, destinations)
    result = delivery.result
    if policy is None:
        return None
    return withhold_reason(
        policy,
        flagged=bool(result.review),
        validation=result.validation,
        decision=result.review_decision,
    )


def resend(
    session_factory: sessionmaker[Session],
    delivery_ids: list[int] | None,
    destinations: Sequence[DicomDestination],
    *,
    actor: Actor | None = None,
) -> Resent:
    """Send deliveries again, the outputs as written (the model does not run): every failed
    one when ``delivery_ids`` is None, else those named. A failed delivery is pending again
    with a fresh attempt budget; a pending one named is published again at the gateway's next
    poll. The destination's policy is asked again: a result rejected since is withheld.

    Named deliveries that cannot be sent (sent already, withheld, superseded, destination
    gone) raise OperationError and nothing changes; with ``None`` they are left and reported.
    ``actor``: the operator, recorded in the audit trail (a row per delivery).
    """
    action = "redeliver_all" if delivery_ids is None else "redeliver"
    named = delivery_ids[0] if delivery_ids is not None and len(delivery_ids) == 1 else None
    with refusals(session_factory, actor, action, delivery_id=named):
        return _resend(session_factory, delivery_ids, destinations, actor, action)


def _resend(
    session_factory: sessionmaker[Session],
    delivery_ids: list[int] | None,
    destinations: Sequence[DicomDestination],
    actor: Actor | None,
    action: str,
) -> Resent:
    done = Resent()
    with session_factory.begin() as session:
        query = (
            select(Delivery)
            .options(
                selectinload(Delivery.result).selectinload(Result.job).selectinload(Job.results)
            )
            .with_for_update(of=Delivery)
            .order_by(Delivery.id)
        )
        if delivery_ids is None:
            query = query.where(Delivery.state == DeliveryState.FAILED)
        else:
            query = query.where(Delivery.id.in_(delivery_ids))
        deliveries = list(session.scalars(query))
        if delivery_ids is not None:
            missing = sorted(set(delivery_ids) - {d.id for d in deliveries})
            if missing:
                raise OperationError(f"no delivery(ies) {', '.join(map(str, missing))}")
        for delivery in deliveries:
            reason = _why_not(delivery, destinations)
            if delivery.state in (DeliveryState.SENT, DeliveryState.WITHHELD):
                reason = f"it is {delivery.state.value}" + (
                    f" ({delivery.error})" if delivery.error else ""
                )
            if reason is not None:
                if delivery_ids is not None:
                    raise OperationError(f"delivery {delivery.id} not sent again: {reason}")
                done.left[delivery.id] = reason
                record(
                    session, actor, action, delivery_id=delivery.id, outcome="left", detail=reason
                )
                continue
            withheld = _withheld(delivery, destinations)
            if withheld is not None:
                delivery.state, delivery.error = DeliveryState.WITHHELD, withheld
                done.withheld[delivery.id] = withheld
                record(
                    session,
                    actor,
                    action,
                    delivery_id=delivery.id,
                    outcome="withheld",
                    detail=withheld,
                )
                continue
            if delivery.state is DeliveryState.FAILED:
                delivery.state, delivery.attempts = DeliveryState.PENDING, 0
            delivery.enqueued_at, delivery.not_before = None, None
            done.queued.append(delivery.id)
            record(
                session, actor, action, delivery_id=delivery.id, detail=f"to {delivery.destination}"
            )
            logger.info("delivery %s to %s queued again", delivery.id, delivery.destination)
        if not deliveries:
            record(session, actor, action, detail="nothing to send again")
    return done
