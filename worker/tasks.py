"""Thin Celery tasks: take an ID, call plain functions, nothing else."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init

from worker.celery_app import TASK_DELIVER, TASK_RUN_JOB, app
from worker.context import WorkerContext
from worker.timelimits import HARD_LIMIT_MARGIN_SECONDS, longest_time_limit_seconds

logger = logging.getLogger(__name__)

_context: WorkerContext | None = None


def context() -> WorkerContext:
    """This process's context (engine, model cache), built once per worker process."""
    global _context  # noqa: PLW0603 - one per process, built after fork
    if _context is None:
        _context = WorkerContext.create()
    return _context


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    global _context  # noqa: PLW0603
    _context = WorkerContext.create()


@app.task(name=TASK_RUN_JOB, acks_late=True, ignore_result=True)
def run_job(job_id: int) -> str | None:
    from worker.jobs import DeliverTo, execute_job

    ctx = context()
    settings = ctx.settings
    deliver_to = DeliverTo(
        settings.destinations,
        settings.delivery_max_attempts,
        return_to_sender=settings.return_to_sender_port is not None,
    )
    state = execute_job(
        ctx.session_factory,
        ctx.models,
        ctx.settings.results_dir,
        job_id,
        deliver_to,
        running_window_s=longest_time_limit_seconds(settings) + HARD_LIMIT_MARGIN_SECONDS,
    )
    return state.value if state else None


@app.task(name=TASK_DELIVER, acks_late=True, ignore_result=True)
def deliver(delivery_id: int) -> str | None:
    from worker.delivery import execute_delivery

    ctx = context()
    settings = ctx.settings
    state = execute_delivery(
        ctx.session_factory, settings.destinations, delivery_id, settings.return_to_sender_port
    )
    return state.value if state else None
