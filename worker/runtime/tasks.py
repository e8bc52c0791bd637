"""Thin Celery tasks: take an ID, call plain functions, nothing else.

A job or delivery attempt that ends in failure is a failed task in Celery's eyes (Flower,
task events, a result backend if one is added): the task raises ``JobFailedError`` /
``DeliveryFailedError`` after the failure is recorded in the database. Nothing retries on
them (no ``autoretry_for``; the outbox publishes a job's next attempt as a new message), the
message is acknowledged as for a success (``acks_late`` acks failures too), and the error is
declared in ``throws`` so the worker logs it in one line, without a traceback.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.signals import worker_init, worker_process_init, worker_ready

from db.models import DeliveryState, JobState
from worker.core.broker import TASK_CORRECT, TASK_DELIVER, TASK_RUN_JOB
from worker.core.errors import MedsegError
from worker.core.timelimits import (
    HARD_LIMIT_MARGIN_SECONDS,
    longest_time_limit_seconds,
    resolve_time_limit,
)
from worker.pipeline.context import WorkerContext
from worker.runtime import beats as _beats  # noqa: F401 - connects the heartbeat signals
from worker.runtime.celery_app import app
from worker.runtime.threads import POOL_PROCESSES_ENV, apply_share, pool_processes

if TYPE_CHECKING:
    from worker.core.settings import Settings
    from worker.runtime.jobs import DeliverTo

logger = logging.getLogger(__name__)

_context: WorkerContext | None = None
DB_DOWN_RETRY_SECONDS = 5
#: Job states in which the attempt failed (queued: it failed and will be tried again).
_JOB_FAILED = frozenset({JobState.FAILED, JobState.QUARANTINED, JobState.QUEUED})
#: Delivery states in which the attempt failed (pending: it will be tried again).
_DELIVERY_FAILED = frozenset({DeliveryState.FAILED, DeliveryState.PENDING})


class JobFailedError(MedsegError):
    """Raised by ``run_job`` once a failed attempt is recorded; the message names the job and
    its state only (the reason, already redacted, is in the database: ``medseg show ID``)."""


class DeliveryFailedError(MedsegError):
    """Raised by ``deliver`` once a failed delivery attempt is recorded."""


def context() -> WorkerContext:
    """This process's context (engine, model cache), built once per worker process."""
    global _context  # noqa: PLW0603 - one per process, built after fork
    if _context is None:
        _context = WorkerContext.create()
    return _context


@worker_init.connect
def _note_pool_size(sender: Any = None, **_: Any) -> None:
    """Before the pool forks: how many processes will share the cores (``threads.py``)."""
    processes = pool_processes(
        getattr(sender, "concurrency", None), getattr(sender, "pool_cls", None)
    )
    os.environ[POOL_PROCESSES_ENV] = str(processes)


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    global _context  # noqa: PLW0603
    threads = apply_share()
    if threads is not None:
        logger.info("torch threads in this pool process: %d (cores shared)", threads)
    _context = WorkerContext.create()


@worker_ready.connect
def _hand_back_orphans(sender: Any = None, **_: Any) -> None:
    """This node restarted: the jobs it was running when it died are not running any more."""
    from db.retry import with_db_retry
    from db.session import make_engine, make_session_factory
    from worker.core.settings import get_settings
    from worker.runtime.recovery import requeue_orphans

    node = str(getattr(sender, "hostname", "") or "")
    if not node:
        return
    engine = make_engine(get_settings().database_url)
    try:
        factory = make_session_factory(engine)
        # Read before handing back: the outbox publishes them again under new task ids.
        lost = with_db_retry(
            lambda: _running_tasks(factory, node), what="reading this node's tasks", total_s=60
        )
        with_db_retry(
            lambda: requeue_orphans(factory, node),
            what="handing back this node's orphaned jobs",
            total_s=60,
        )
        _close_lost_tasks(sender, lost, node)
    except Exception:  # the sweeper is the fallback; the worker must still start
        logger.exception("could not hand back the jobs of %s", node)
    finally:
        engine.dispose()


def _running_tasks(factory: Any, node: str) -> list[str]:
    """The Celery task ids of the jobs ``node`` was running."""
    from sqlalchemy import select

    from db.models import Job

    with factory() as session:
        return [
            str(task_id)
            for task_id in session.scalars(
                select(Job.celery_task_id).where(
                    Job.state == JobState.RUNNING,
                    Job.worker == node,
                    Job.celery_task_id.isnot(None),
                )
            )
        ]


def _close_lost_tasks(sender: Any, task_ids: list[str], node: str) -> None:
    """A task-failed event for each task this node was running when it died: Flower (and any
    event consumer) would otherwise show them STARTED forever."""
    if not task_ids:
        return
    with sender.app.events.default_dispatcher(hostname=node) as dispatcher:
        for task_id in task_ids:
            dispatcher.send(
                "task-failed",
                uuid=task_id,
                exception=f"WorkerLostError('{node} died while running it; job handed back')",
                traceback="",
            )
    logger.info("%d lost task(s) of %s closed as failed for event consumers", len(task_ids), node)


@app.task(
    name=TASK_RUN_JOB, bind=True, acks_late=True, ignore_result=True, throws=(JobFailedError,)
)
def run_job(self: Task[Any, Any], job_id: int) -> str | None:
    """Run job ``job_id``; on a worker that batches (``MEDSEG_BATCH_MAX`` over 1), with the
    queued jobs of the same single-frame model it claims with it (worker.runtime.batch_jobs).
    The task's outcome is ``job_id``'s; the others' are in the database, and their own
    messages, when they come, are dropped as duplicates."""
    from sqlalchemy.exc import DBAPIError

    from db.retry import is_transient
    from worker.runtime.batch_jobs import execute_batch

    ctx = context()
    settings = ctx.settings
    deliver_to = _deliver_to(settings)
    try:
        states = execute_batch(
            ctx.session_factory,
            ctx.models,
            ctx.settings.results_dir,
            job_id,
            deliver_to,
            batching=ctx.batching,
            running_window_s=longest_time_limit_seconds(settings) + HARD_LIMIT_MARGIN_SECONDS,
            worker=self.request.hostname,
            # The limit is this worker's: MEDSEG_MODEL_TIME_LIMITS set here applies.
            time_limit=lambda model: resolve_time_limit(model, settings),
        )
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        # The database is away before the job could be claimed: the message comes back later.
        logger.warning("job %s: database unavailable (%s), retrying the message", job_id, exc)
        raise self.retry(countdown=DB_DOWN_RETRY_SECONDS, max_retries=720) from exc
    for ran, ran_state in states.items():
        if ran_state in (JobState.SUCCEEDED, JobState.NEEDS_REVIEW):
            _shadows(ctx, ran)
    _observe_mates(ctx, [ran for ran in states if ran != job_id])
    state = states.get(job_id)
    if state in _JOB_FAILED:
        again = " (it will be tried again)" if state is JobState.QUEUED else ""
        raise JobFailedError(f"job {job_id} attempt failed, now {state.value}{again}")
    return state.value if state else None


def _observe_mates(ctx: WorkerContext, job_ids: list[int]) -> None:
    """The job metrics of the jobs run in this task's batch besides its own (its own are
    sampled after the task; a duplicate message, which runs nothing, samples none)."""
    from worker.runtime import metrics

    if not job_ids or not metrics.enabled():
        return
    for job_id in job_ids:
        try:
            metrics.record_job(ctx.session_factory, job_id)
        except Exception as exc:  # metrics never break a task
            logger.warning("metrics of job %s not recorded: %s", job_id, type(exc).__name__)


def _deliver_to(settings: Settings) -> DeliverTo:
    """Where this worker's new results go (its destinations and return to sender)."""
    from worker.runtime.jobs import DeliverTo

    return DeliverTo(
        settings.destinations,
        settings.delivery_max_attempts,
        return_to_sender=settings.return_to_sender_port is not None,
    )


def _shadows(ctx: WorkerContext, job_id: int) -> None:
    """The model's shadow versions on the same series, after the live result is recorded;
    nothing they do changes the live job's outcome."""
    from worker.shadow.run import run_shadows

    try:
        run_shadows(ctx.session_factory, ctx.models, ctx.settings.results_dir, job_id)
    except Exception:  # the live result stands whatever happens to its shadows
        logger.exception("job %s: shadow versions could not run", job_id)


@app.task(name=TASK_DELIVER, acks_late=True, ignore_result=True, throws=(DeliveryFailedError,))
def deliver(delivery_id: int) -> str | None:
    from worker.delivery.deliver import execute_delivery

    ctx = context()
    settings = ctx.settings
    state = execute_delivery(
        ctx.session_factory, settings.destinations, delivery_id, settings.return_to_sender_port
    )
    if state in _DELIVERY_FAILED:
        raise DeliveryFailedError(f"delivery {delivery_id} attempt failed, now {state.value}")
    return state.value if state else None


@app.task(name=TASK_CORRECT, acks_late=True, ignore_result=True)
def correct(correction_id: int) -> str | None:
    """Apply a reviewer's correction (worker.corrections.apply); its outcome is on the row."""
    from worker.corrections.apply import execute_correction

    ctx = context()
    settings = ctx.settings
    deliver_to = _deliver_to(settings)
    state = execute_correction(ctx.session_factory, correction_id, settings.results_dir, deliver_to)
    return state.value if state else None
