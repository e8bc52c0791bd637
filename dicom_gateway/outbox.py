"""The outbox: jobs and deliveries are committed first, then published; a broker outage
loses nothing, it only delays them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import literal, or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Correction, CorrectionState, Delivery, DeliveryState, Job, JobState, utcnow
from worker.core.broker import TASK_CORRECT, TASK_DELIVER, TASK_RUN_JOB

logger = logging.getLogger(__name__)


class Publisher(Protocol):
    """Sends one message; returns the broker's task id, raises when the broker is unreachable.

    ``model`` names the job's model (None for deliveries).
    """

    def __call__(self, task: str, row_id: int, queue: str, model: str | None = None) -> str: ...


@dataclass(frozen=True)
class _Kind:
    model: type[Job] | type[Delivery] | type[Correction]
    waiting: JobState | DeliveryState | CorrectionState
    task: str
    fixed_queue: str | None  # deliveries and corrections go to the cpu queue; jobs carry theirs


_KINDS = (
    _Kind(Job, JobState.QUEUED, TASK_RUN_JOB, None),
    _Kind(Delivery, DeliveryState.PENDING, TASK_DELIVER, "cpu"),
    _Kind(Correction, CorrectionState.RECEIVED, TASK_CORRECT, "cpu"),
)


def _pending(session: Session, kind: _Kind, now: datetime) -> list[tuple[int, str, str | None]]:
    model: Any = kind.model
    queue = model.queue if kind.fixed_queue is None else literal(kind.fixed_queue)
    model_name = model.model_name if kind.model is Job else literal(None)
    rows = session.execute(
        select(model.id, queue, model_name)
        .where(
            model.state == kind.waiting,
            model.enqueued_at.is_(None),
            or_(model.not_before.is_(None), model.not_before <= now),
        )
        .order_by(model.id)
    ).all()
    return [(int(row_id), str(row_queue), name) for row_id, row_queue, name in rows]


def dispatch_pending(
    session_factory: sessionmaker[Session], publish: Publisher, now: datetime | None = None
) -> int:
    """Publish every due job, delivery and correction not yet published; returns how many
    were sent."""
    now = now or utcnow()
    sent = 0
    for kind in _KINDS:
        with session_factory() as session:
            pending = _pending(session, kind, now)
        for row_id, queue, model_name in pending:
            try:
                task_id = publish(kind.task, row_id, queue, model_name)
            except Exception as exc:  # the broker client raises many kinds; all mean "not sent"
                logger.warning(
                    "broker unavailable, %s %d waits in the outbox: %s",
                    kind.model.__tablename__,
                    row_id,
                    exc,
                )
                return sent
            with session_factory.begin() as session:
                row: Any = session.get(kind.model, row_id)
                if row is not None and row.state is kind.waiting:
                    row.enqueued_at = utcnow()
                    if isinstance(row, Job):
                        row.celery_task_id = task_id
            sent += 1
    return sent


def task_display_name(task: str, model: str | None) -> str:
    """``medseg.run_job[lung-ct-threshold]`` for a job, ``medseg.deliver`` for a delivery."""
    return f"{task}[{model}]" if model else task


def celery_publisher(app: object) -> Publisher:
    """A publisher sending through a Celery app, failing fast when the broker is down.

    Messages carry no time limits: the worker applies each model's limit from its own
    settings where the model runs (``worker.runtime.deadline``).
    """
    from celery import Celery

    assert isinstance(app, Celery)

    def publish(task: str, row_id: int, queue: str, model: str | None = None) -> str:
        result = app.send_task(
            task,
            args=[row_id],
            queue=queue,
            # The name Flower and task events show: jobs by model, apart from deliveries.
            shadow=task_display_name(task, model),
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5},
        )
        return str(result.id)

    return publish
