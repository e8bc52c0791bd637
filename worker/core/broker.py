"""The broker contract both roles share: queue names, task names and the Celery app both
publish with (Redis broker, queues ``gpu`` and ``cpu``, no result backend). The gateway
publishes with it; the worker consumes with the app ``worker.runtime.celery_app`` builds from it.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from worker.core.settings import Settings
from worker.core.timelimits import (
    HARD_LIMIT_MARGIN_SECONDS,
    longest_time_limit_seconds,
    visibility_timeout_seconds,
)

QUEUES = ("gpu", "cpu")
TASK_RUN_JOB = "medseg.run_job"
TASK_DELIVER = "medseg.deliver"
#: The module that defines the tasks; named, not imported, so publishing needs no worker code.
TASKS_MODULE = "worker.runtime.tasks"


def create_celery(settings: Settings) -> Celery:
    app = Celery("medseg", broker=settings.broker_url, include=[TASKS_MODULE])
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_acks_late=True,  # run_job is idempotent: a redelivered finished job is skipped
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        # Jobs carry their model's limits in the message (see timelimits); these are the
        # fallbacks for messages without them (deliveries).
        task_soft_time_limit=settings.job_time_limit_seconds,
        task_time_limit=longest_time_limit_seconds(settings) + HARD_LIMIT_MARGIN_SECONDS,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Above the longest job, or Redis redelivers a job that is still running.
            "visibility_timeout": visibility_timeout_seconds(settings),
            **(
                {"global_keyprefix": settings.broker_key_prefix}
                if settings.broker_key_prefix
                else {}
            ),
        },
        task_serializer="json",
        accept_content=["json"],
        enable_utc=True,
    )
    return app
