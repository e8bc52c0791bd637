"""What operators do to jobs (list, retry, cancel) and what they look at (status)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.jobstate import InvalidTransitionError, transition
from db.models import Job, JobState, Result, Series, SeriesStatus, utcnow
from worker.core.broker_probe import ASK_TIMEOUT_S, BrokerView, look
from worker.ops.audit import Actor, record, refusals

if TYPE_CHECKING:
    from worker.core.registry import ModelSpec

logger = logging.getLogger(__name__)

RETRYABLE = (JobState.FAILED, JobState.QUARANTINED, JobState.CANCELLED)
#: What ``retry --failed`` and the dashboard's "Retry all" queue again: never a cancelled job
#: (an operator or a superseding series stopped it on purpose); naming it revives it.
#: Jobs that failed on their input (``Job.error_kind`` input) are left too: they fail again.
RETRY_ALL = (JobState.FAILED, JobState.QUARANTINED)


class OperationError(RuntimeError):
    """The operation does not apply to the job as it is; the message says why."""


def model_to_run(model_name: str) -> ModelSpec:
    """The registered model an operator asks to run (``medseg route``, ``medseg rerun``);
    refused, with the reason, when there is none by that name or it is off here
    (``registry.off_reason``)."""
    from worker.core.registry import get_spec, off_reason

    try:
        spec = get_spec(model_name)
    except KeyError as exc:
        raise OperationError(exc.args[0]) from exc
    if (off := off_reason(spec)) is not None:
        raise OperationError(off)
    return spec


def list_jobs(
    session_factory: sessionmaker[Session],
    *,
    state: JobState | None = None,
    since: datetime | None = None,
    model: str | None = None,
    delivery_failed: bool = False,
    limit: int = 200,
) -> list[Job]:
    """The newest jobs, filtered; ``delivery_failed``: only those with a delivery failed for
    good (``worker.ops.deliveries``), whatever their state."""
    query = select(Job).options(
        selectinload(Job.series).selectinload(Series.study),
        selectinload(Job.results).selectinload(Result.deliveries),
    )
    if delivery_failed:
        from worker.ops.deliveries import delivery_failed as has_failed_delivery

        query = query.where(has_failed_delivery())
    if state is not None:
        query = query.where(Job.state == state)
    if since is not None:
        query = query.where(Job.created_at >= since)
    if model is not None:
        query = query.where(Job.model_name == model)
    with session_factory() as session:
        return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def retry(
    session_factory: sessionmaker[Session],
    job_ids: list[int] | None = None,
    *,
    actor: Actor | None = None,
) -> list[int]:
    """Queue failed, quarantined or cancelled jobs again with a fresh attempt budget; the
    outbox publishes them. Returns the IDs queued.

    Without ``job_ids``: every failed or quarantined job, never a cancelled one (cancelled
    on purpose, by an operator or because its series grew). A cancelled job is revived only
    when named, and not when it was superseded (the job on the whole series replaces it).

    A queued job named in ``job_ids`` is published again at the gateway's next poll, its
    backoff (if any) dropped and its attempts kept: its message may have been lost with the
    broker's memory. Should the old message still arrive, the worker drops the duplicate.

    ``actor``: the operator, recorded in the audit trail (one row per job queued). The
    previous attempts keep their errors (``JobAttempt``); the job's own error is cleared.
    """
    action = "retry" if job_ids else "retry_all"
    named = job_ids[0] if job_ids and len(job_ids) == 1 else None
    with refusals(session_factory, actor, action, job_id=named):
        return _retry(session_factory, job_ids, actor, action)


def _retry(
    session_factory: sessionmaker[Session],
    job_ids: list[int] | None,
    actor: Actor | None,
    action: str,
) -> list[int]:
    queued: list[int] = []
    with session_factory.begin() as session:
        query = select(Job).with_for_update()
        query = (
            query.where(Job.id.in_(job_ids))
            if job_ids
            else query.where(Job.state.in_(RETRY_ALL), _not_bad_input())
        )
        jobs = list(session.scalars(query))
        if job_ids and len(jobs) != len(set(job_ids)):
            missing = sorted(set(job_ids) - {j.id for j in jobs})
            raise OperationError(f"no job(s) {', '.join(map(str, missing))}")
        for job in jobs:
            if job.state is JobState.QUEUED:
                job.enqueued_at = None
                job.not_before = None
                queued.append(job.id)
                record(session, actor, action, job_id=job.id, detail="queued: published again")
                logger.info("job %s published again by an operator", job.id)
                continue
            if job.state not in RETRYABLE:
                raise OperationError(
                    f"job {job.id} is {job.state.value}; only queued (published again), "
                    "failed, quarantined or cancelled jobs are retried"
                )
            if job.state is JobState.CANCELLED and job.superseded_at is not None:
                raise OperationError(
                    f"job {job.id} was superseded (its series grew); the job made for the "
                    "whole series replaces it"
                )
            detail = f"{job.state.value} -> queued, a fresh budget of {job.max_attempts}"
            transition(job, JobState.QUEUED)  # the old error stays with its attempt
            job.attempts = 0
            job.not_before = None
            job.error_kind = None
            queued.append(job.id)
            record(session, actor, action, job_id=job.id, detail=detail)
            logger.info("job %s queued again by an operator", job.id)
        if not queued:
            record(session, actor, action, detail="nothing to retry")
    return queued


def _not_bad_input() -> ColumnElement[bool]:
    """Not failed on its input: "Retry all" leaves those (they would fail again); naming
    the job still retries it."""
    return or_(Job.error_kind.is_(None), Job.error_kind != "input")


def count_bad_input(session_factory: sessionmaker[Session]) -> int:
    """Failed jobs "Retry all" leaves because they failed on their input."""
    with session_factory() as session:
        query = select(func.count()).where(Job.state.in_(RETRY_ALL), Job.error_kind == "input")
        return int(session.scalar(query) or 0)


def cancel(
    session_factory: sessionmaker[Session], job_id: int, *, actor: Actor | None = None
) -> None:
    with (
        refusals(session_factory, actor, "cancel", job_id=job_id),
        session_factory.begin() as session,
    ):
        job = session.get(Job, job_id, with_for_update=True)
        if job is None:
            raise OperationError(f"no job {job_id}")
        was = job.state.value
        try:
            transition(job, JobState.CANCELLED, error="cancelled by an operator")
        except InvalidTransitionError as exc:
            raise OperationError(
                f"job {job_id} is {job.state.value}; queued, failed or quarantined jobs can be "
                "cancelled (a running job finishes its attempt)"
            ) from exc
        record(session, actor, "cancel", job_id=job_id, detail=f"{was} -> cancelled")


@dataclass
class Status:
    queue_depth: dict[str, int | None]
    workers: list[str] | None  # None: the broker could not be asked
    by_state_hour: dict[str, int] = field(default_factory=dict)
    by_state_day: dict[str, int] = field(default_factory=dict)
    oldest_waiting_s: float | None = None
    finished_hour: int = 0
    failure_rate_day: float | None = None
    awaiting_review: int = 0  # needs_review jobs whose result no reviewer has decided
    #: What was not processed in the last day and why: {reason: series}, from series no
    #: model accepts (``unrouted``) and ``skipped`` jobs (Job.error).
    skipped_reasons_day: dict[str, int] = field(default_factory=dict)
    #: Deliveries failed for good (any age: they stay failed until sent again).
    deliveries_failed: int = 0
    #: The workers consuming each queue; None: the workers could not be asked.
    consumers: dict[str, list[str]] | None = None


def _counts(session: Session, since: datetime) -> dict[str, int]:
    rows = session.execute(
        select(Job.state, func.count()).where(Job.created_at >= since).group_by(Job.state)
    ).all()
    return {state.value: int(count) for state, count in rows}


def status(
    session_factory: sessionmaker[Session],
    redis_client: Any,
    celery_app: Any | None,
    key_prefix: str = "",
    *,
    broker: BrokerView | None = None,
    shared_max_age_s: float | None = None,
    beats_max_age_s: float | None = None,
    ask_timeout_s: float = ASK_TIMEOUT_S,
) -> Status:
    """The numbers of ``medseg status`` and the overview. ``broker``: the broker's view
    already read (the dashboard's background probe); without it the broker is asked now, or
    the workers' heartbeats (``beats_max_age_s``) or the workers a gateway's or dashboard's
    probe left in Redis (``shared_max_age_s``) read."""
    now = utcnow()
    if broker is None:
        broker = look(
            redis_client,
            celery_app,
            key_prefix,
            ask_timeout_s,
            shared_max_age_s=shared_max_age_s,
            beats_max_age_s=beats_max_age_s,
        )
    depth, workers, consumers = broker.queue_depth, broker.workers, broker.consumers
    from worker.ops.deliveries import count_failed

    with session_factory() as session:
        hour, day = (
            _counts(session, now - timedelta(hours=1)),
            _counts(session, now - timedelta(days=1)),
        )
        # From the last queueing (made, retried, given back), not from creation: a retried
        # old job has waited only since its retry. Rows older than queued_at: creation.
        oldest = session.scalar(
            select(func.min(func.coalesce(Job.queued_at, Job.created_at))).where(
                Job.state == JobState.QUEUED
            )
        )
        finished = session.scalar(
            select(func.count()).where(Job.finished_at >= now - timedelta(hours=1))
        )
        skipped = _skipped_reasons(session, now - timedelta(days=1))
        awaiting = session.scalar(
            select(func.count(func.distinct(Job.id)))
            .join(Result, Result.job_id == Job.id)
            .where(Job.state == JobState.NEEDS_REVIEW, Result.review_decision.is_(None))
        )
        deliveries_failed = count_failed(session)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now.tzinfo)
    done = Counter(
        {
            k: v
            for k, v in day.items()
            if k in ("succeeded", "needs_review", "failed", "quarantined")
        }
    )
    total = sum(done.values())
    return Status(
        queue_depth=depth,
        workers=workers,
        by_state_hour=hour,
        by_state_day=day,
        # max: the database clock (server_default now()) may run ahead of ours
        oldest_waiting_s=max(0.0, (now - oldest).total_seconds()) if oldest is not None else None,
        finished_hour=int(finished or 0),
        failure_rate_day=(done["failed"] + done["quarantined"]) / total if total else None,
        awaiting_review=int(awaiting or 0),
        skipped_reasons_day=skipped,
        deliveries_failed=deliveries_failed,
        consumers=consumers,
    )


def _skipped_reasons(session: Session, since: datetime) -> dict[str, int]:
    """The routing summary: why series were not processed, most frequent first."""
    from worker.core.routing import unrouted_reason
    from worker.core.tags import SeriesTags

    reasons: Counter[str] = Counter()
    unrouted = session.scalars(
        select(Series).where(
            Series.status == SeriesStatus.UNROUTED, Series.last_received_at >= since
        )
    ).all()
    for series in unrouted:
        tags = SeriesTags.of_row(series)
        reasons[unrouted_reason(tags)] += 1
    errors = session.scalars(
        select(Job.error).where(Job.state == JobState.SKIPPED, Job.created_at >= since)
    ).all()
    reasons.update(error or "skipped" for error in errors)
    return dict(reasons.most_common(10))
