"""How long a job may run: per model, with the broker's redelivery timeout above the longest.

A model's limit is, in order: ``MEDSEG_MODEL_TIME_LIMITS[name]``, the model's own
``ModelSpec.time_limit_seconds``, ``MEDSEG_JOB_TIME_LIMIT_SECONDS``. At the soft limit the job
raises inside the model (recorded, retried with backoff, quarantined after its attempts); at the
hard limit, ``HARD_LIMIT_MARGIN_SECONDS`` later, Celery kills the worker process.
"""

from __future__ import annotations

from worker.core.registry import all_specs, get_spec
from worker.core.settings import Settings

HARD_LIMIT_MARGIN_SECONDS = 60
VISIBILITY_MARGIN_SECONDS = 600


def time_limit_seconds(model_name: str, settings: Settings) -> int:
    """Soft time limit of a job of ``model_name``."""
    if model_name in settings.model_time_limits:
        return settings.model_time_limits[model_name]
    try:
        own = get_spec(model_name).time_limit_seconds
    except KeyError:
        own = None
    return own if own is not None else settings.job_time_limit_seconds


def longest_time_limit_seconds(settings: Settings) -> int:
    """The longest soft limit any job can have."""
    limits = [settings.job_time_limit_seconds, *settings.model_time_limits.values()]
    limits += [time_limit_seconds(spec.name, settings) for spec in all_specs()]
    return max(limits)


def visibility_timeout_seconds(settings: Settings) -> int:
    """Redis redelivers an unacknowledged job after this: well above the longest job."""
    return 2 * (longest_time_limit_seconds(settings) + HARD_LIMIT_MARGIN_SECONDS) + (
        VISIBILITY_MARGIN_SECONDS
    )
