"""The Celery application (Redis broker, queues ``gpu`` and ``cpu``); no result backend."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from dicom_gateway.outbox import TASK_DELIVER, TASK_RUN_JOB
from worker.settings import Settings, get_settings

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
        task_soft_time_limit=settings.job_time_limit_seconds,
        task_time_limit=settings.job_time_limit_seconds + 60,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # Above the longest job, or Redis redelivers a job that is still running.
            "visibility_timeout": settings.visibility_timeout_seconds,
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
