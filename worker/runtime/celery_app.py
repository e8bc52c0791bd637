"""The Celery application (Redis broker, queues ``gpu`` and ``cpu``); no result backend."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from dicom_gateway.outbox import TASK_DELIVER, TASK_RUN_JOB
from worker.settings import Settings, get_settings
from worker.timelimits import (
    HARD_LIMIT_MARGIN_SECONDS,
    longest_time_limit_seconds,
    visibility_timeout_seconds,
)

__all__ = ["QUEUES", "TASK_DELIVER", "TASK_RUN_JOB", "app", "create_celery"]

QUEUES = ("gpu", "cpu")


def create_celery(settings: Settings) -> Celery:
    app = Celery("medseg", broker=settings.broker_url, include=["worker.tasks"])
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


app = create_celery(get_settings())
