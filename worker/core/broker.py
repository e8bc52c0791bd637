"""The broker contract both roles share: queue names, task names and the Celery app both
publish with (Redis broker, queues ``gpu`` and ``cpu``, no result backend). The gateway
publishes with it; the worker consumes with the app ``worker.runtime.celery_app`` builds from it.
Celery is imported when an app is built, not with the names: commands that only need the
queue names start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from worker.core.settings import Settings

QUEUES = ("gpu", "cpu")
TASK_RUN_JOB = "medseg.run_job"
TASK_DELIVER = "medseg.deliver"
TASK_CORRECT = "medseg.correct"  # apply a reviewer's correction (worker.corrections)
#: The module that defines the tasks; named, not imported, so publishing needs no worker code.
TASKS_MODULE = "worker.runtime.tasks"


def _transport_options(settings: Settings, visibility_timeout: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if visibility_timeout is not None:
        # Above the longest job, or Redis redelivers a job that is still running.
        options["visibility_timeout"] = visibility_timeout
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def create_celery(settings: Settings) -> Celery:
    from celery import Celery
    from kombu import Queue

    from worker.core.timelimits import (
        BACKSTOP_MARGIN_SECONDS,
        HARD_LIMIT_MARGIN_SECONDS,
        longest_time_limit_seconds,
        visibility_timeout_seconds,
    )

    app = Celery("medseg", broker=settings.broker_url, include=[TASKS_MODULE])
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_acks_late=True,  # run_job is idempotent: a redelivered finished job is skipped
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        # A job's own limit is applied by the worker where the model runs
        # (worker.runtime.deadline, from the worker's settings); these are backstops, for
        # deliveries too. Messages carry no limits: the gateway's settings do not decide.
        task_soft_time_limit=longest_time_limit_seconds(settings) + BACKSTOP_MARGIN_SECONDS,
        task_time_limit=longest_time_limit_seconds(settings) + HARD_LIMIT_MARGIN_SECONDS,
        # Task events from the start (Flower turns them on only when it connects, so the
        # first failures were missing). No task-sent events: they carry the task's own name,
        # not the shadow name a job is published under (medseg.run_job[model]).
        worker_send_task_events=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings, visibility_timeout_seconds(settings)),
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
    )
    return app


def create_control_app(settings: Settings) -> Celery:
    """An app that only talks to the workers (``control.inspect``): same broker and key
    prefix as ``create_celery``, without the time limits, so the model registry (and the
    models' imports) is not loaded: ``medseg status`` starts fast."""
    from celery import Celery

    app = Celery("medseg", broker=settings.broker_url)
    app.conf.update(
        broker_transport_options=_transport_options(settings, None),
        worker_hijack_root_logger=False,
        accept_content=["json"],
    )
    return app
